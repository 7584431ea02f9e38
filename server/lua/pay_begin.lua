-- pay_begin: records a payment for a HELD reservation (status SUBMITTING until the
-- server has Kafka's acknowledgement), or finds the one this idempotency key made.
-- KEYS: 1 q:tok. ARGV: 1 P, 2 token, 3 rid, 4 idempotency key, 5 new payment id
-- Reply: pay_reply (new = 1 when created here) or {code, message}.
local P, tok, rid, key, newpid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
local user = redis.call('HGET', P .. 'q:tok', tok)
if not user then return {16, 'authorization: unknown token'} end
-- A retry finds its payment whatever the token's state (a completed payment has
-- expired the token already).
local pid = redis.call('HGET', P .. 'pk:' .. user, key)
if pid then
  if redis.call('HGET', P .. 'p:' .. pid, 'rid') ~= rid then
    return {9, 'idempotency_key: already used for another reservation'}
  end
  return pay_reply(P, pid, 0)
end
local u, code, msg = active_user(P, tok, now)
if not u then return {code, msg} end
local r = P .. 'r:' .. rid
local f = redis.call('HMGET', r, 'user', 'status', 'exp', 'total', 'payment')
if not f[1] then return {5, 'reservation_id: not found'} end
if f[1] ~= user then return {7, 'reservation_id: belongs to another user'} end
if f[2] == 'HELD' and tonumber(f[3]) <= now then
  release(P, rid, 'EXPIRED')
  f[2] = 'EXPIRED'
end
if f[2] ~= 'HELD' then return {9, 'reservation_id: not held (' .. f[2] .. ')'} end
if f[5] and f[5] ~= '' and redis.call('HGET', P .. 'p:' .. f[5], 'status') ~= 'FAILED' then
  return {9, 'reservation_id: already being paid by ' .. f[5]}
end
redis.call('HSET', P .. 'p:' .. newpid, 'rid', rid, 'user', user, 'amount', f[4], 'key', key,
  'status', 'SUBMITTING', 'reason', '', 'created', now, 'updated', now, 'token', tok)
redis.call('HSET', P .. 'pk:' .. user, key, newpid)
redis.call('SADD', P .. 'pays', newpid)
redis.call('ZADD', P .. 'pend', now, newpid) -- unsettled payments, read by ADAPTIVE admission (queue_admit)
redis.call('HSET', r, 'payment', newpid)
return pay_reply(P, newpid, 1)
