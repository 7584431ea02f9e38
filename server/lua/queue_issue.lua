-- queue_issue: joins a concert's queue, idempotent per user. Only a concert an admin
-- created has a queue: for any other id nothing is written.
-- KEYS: 1 users (hash user->latest token), 2 tok (hash token->user), 3 wait (zset
--       token->seq), 4 seen (zset token->last seen ms), 5 active (zset token->expiry ms),
--       6 seq, 7 policy (hash), 8 concert (hash), 9 gone (zset token->ended ms)
-- ARGV: 1 user_id, 2 fresh token, 3 default rate per second
-- Returns {token, state(1 waiting, 2 active; -1 no such concert), position, expires_at_ms, rate,
--          new (1: this call made the token)}
if redis.call('EXISTS', KEYS[8]) == 0 then return {'', -1, 0, 0, 0, 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rate = tonumber(redis.call('HGET', KEYS[7], 'rate') or ARGV[3])
local tok = redis.call('HGET', KEYS[1], ARGV[1])
if tok then
  if redis.call('ZSCORE', KEYS[3], tok) then
    redis.call('ZADD', KEYS[4], now, tok)
    return {tok, 1, redis.call('ZRANK', KEYS[3], tok) + 1, 0, rate, 0}
  end
  local e = redis.call('ZSCORE', KEYS[5], tok)
  if e and tonumber(e) > now then
    return {tok, 2, 0, tonumber(e), rate, 0}
  end
  -- The user's previous token has ended (left, expired, idled out): it goes now, so
  -- a user who cycles join/leave keeps one ended token, not one per cycle.
  redis.call('HDEL', KEYS[2], tok)
  redis.call('ZREM', KEYS[9], tok)
  redis.call('ZREM', KEYS[5], tok)
  redis.call('ZREM', KEYS[4], tok)
end
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[2])
redis.call('ZADD', KEYS[4], now, ARGV[2])
return {ARGV[2], 1, redis.call('ZRANK', KEYS[3], ARGV[2]) + 1, 0, rate, 1}
