-- queue_status: where a token stands; refreshes a waiting token's idle timer.
-- KEYS: 1 tok, 2 wait, 3 seen, 4 active, 5 policy, 6 concert (hash)
-- ARGV: 1 token, 2 default rate per second
-- Returns {state(0 unknown, 1 waiting, 2 active, 3 expired; -1 no such concert),
--          position, expires_at_ms, rate, user}
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then
  if redis.call('EXISTS', KEYS[6]) == 0 then return {-1, 0, 0, 0, ''} end
  return {0, 0, 0, 0, ''}
end
local rate = tonumber(redis.call('HGET', KEYS[5], 'rate') or ARGV[2])
local r = redis.call('ZRANK', KEYS[2], ARGV[1])
if r then
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  return {1, r + 1, 0, rate, user}
end
local e = redis.call('ZSCORE', KEYS[4], ARGV[1])
if e and tonumber(e) > now then return {2, 0, tonumber(e), rate, user} end
return {3, 0, 0, rate, user}
