-- queue_leave: gives up a token's place or admission. Idempotent.
-- KEYS: 1 users, 2 tok, 3 wait, 4 seen, 5 active, 6 gone (zset token->ended ms)
-- ARGV: 1 token
-- Returns the previous state (0 unknown, 1 waiting, 2 active, 3 expired)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local user = redis.call('HGET', KEYS[2], ARGV[1])
if not user then return 0 end
local prev = 3
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  prev = 1
  redis.call('ZREM', KEYS[4], ARGV[1])
else
  local e = redis.call('ZSCORE', KEYS[5], ARGV[1])
  if e then
    if tonumber(e) > now then prev = 2 end
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
end
if prev ~= 3 or not redis.call('ZSCORE', KEYS[6], ARGV[1]) then
  redis.call('ZADD', KEYS[6], now, ARGV[1])
end
if redis.call('HGET', KEYS[1], user) == ARGV[1] then redis.call('HDEL', KEYS[1], user) end
return prev
