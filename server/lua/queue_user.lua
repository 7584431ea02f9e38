-- queue_user: the concerts one user waits in (or is ACTIVE in), for the cap on how
-- many at once. One hash per user in the user's own slot, concert -> token (a record,
-- not the truth: the queue's own keys say whether a token still lives, and the server
-- checks them before refusing). Entries go when the user leaves, and when the queue
-- forgets an ended token (an hour after it ended); the hash goes with its last entry.
-- No TTL: under memory pressure nothing of a user's may be evicted.
-- KEYS: 1 cc:{w:<user>}:queues
-- ARGV: 1 mode
--   'add', 2 concert, 3 token, 4 cap, 5.. (concert, token) pairs found dead, removed
--     first: records the token and answers {0} if the concert is recorded already or
--     fewer than cap are; else {1, concert, token, ...} (the record, nothing added)
--   'del', 2 concert, 3 token: forgets it if it is still the one recorded; {0}
local mode = ARGV[1]
if mode == 'del' then
  if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[2]) end
  return {0}
end
for i = 5, #ARGV - 1, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return {0}
end
local out = {1}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
