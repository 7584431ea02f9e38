-- queue_issue: joins a concert's queue, idempotent per user.
-- KEYS: 1 users (hash user->token), 2 tok (hash token->user), 3 wait (zset token->seq),
--       4 seen (zset token->last seen ms), 5 active (zset token->expiry ms), 6 seq,
--       7 policy (hash)
-- ARGV: 1 user_id, 2 fresh token, 3 default rate per second
-- Returns {token, state(1 waiting, 2 active), position, expires_at_ms, rate}
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rate = tonumber(redis.call('HGET', KEYS[7], 'rate') or ARGV[3])
local tok = redis.call('HGET', KEYS[1], ARGV[1])
if tok then
  if redis.call('ZSCORE', KEYS[3], tok) then
    redis.call('ZADD', KEYS[4], now, tok)
    return {tok, 1, redis.call('ZRANK', KEYS[3], tok) + 1, 0, rate}
  end
  local e = redis.call('ZSCORE', KEYS[5], tok)
  if e and tonumber(e) > now then
    return {tok, 2, 0, tonumber(e), rate}
  end
end
local seq = redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[2])
redis.call('ZADD', KEYS[4], now, ARGV[2])
return {ARGV[2], 1, redis.call('ZRANK', KEYS[3], ARGV[2]) + 1, 0, rate}
