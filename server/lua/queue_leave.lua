-- queue_leave: gives up a token's place or admission. Idempotent. The user's entry in
-- `users` keeps pointing at the ended token, so that joining again removes it
-- (queue_issue) instead of leaving one ended token behind per join/leave cycle.
-- KEYS: 1 users, 2 tok, 3 wait, 4 seen, 5 active, 6 gone (zset token->ended ms), 7 concert
-- ARGV: 1 token
-- Returns {previous state (0 unknown, 1 waiting, 2 active, 3 expired; -1 no such
--          concert), user}
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local user = redis.call('HGET', KEYS[2], ARGV[1])
if not user then
  if redis.call('EXISTS', KEYS[7]) == 0 then return {-1, ''} end
  return {0, ''}
end
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
return {prev, user}
