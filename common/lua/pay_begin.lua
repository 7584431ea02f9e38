-- pay_begin: Pay's first step (concert slot). Records a payment for a HELD reservation
-- as SUBMITTING (the server then sends it to Kafka), or finds the payment this
-- idempotency key made (whatever the token's state: a completed payment has expired
-- the token already) and answers it as it is; a payment Pay ABANDONED is SUBMITTING
-- again when it can still be paid (the retry submits it again).
-- KEYS: 1 q:tok. ARGV: 1 P, 2 token, 3 rid, 4 idempotency key, 5 new payment id
-- Reply: pay_reply (new = 1 created, 2 submitted again) or {code, message}.
local P, tok, rid, key, newpid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
local user = redis.call('HGET', P .. 'q:tok', tok)
if not user then
  -- Not admitted yet (WAITING: PERMISSION_DENIED) or unknown (UNAUTHENTICATED).
  local _, code, msg = active_user(P, tok, now)
  return {code, msg}
end
local r = P .. 'r:' .. rid

-- The reservation can be paid now by `pid` (nil: a new payment), or code, message.
local function payable(pid)
  local u, code, msg = active_user(P, tok, now)
  if not u then return code, msg end
  local f = redis.call('HMGET', r, 'user', 'status', 'exp', 'total', 'payment')
  if not f[1] then return 5, 'reservation_id: not found' end
  if f[1] ~= user then return 7, 'reservation_id: belongs to another user' end
  if f[2] == 'HELD' and tonumber(f[3]) <= now then
    release(P, rid, 'EXPIRED')
    f[2] = 'EXPIRED'
  end
  if f[2] ~= 'HELD' then return 9, 'reservation_id: not held (' .. f[2] .. ')' end
  if f[5] and f[5] ~= '' and f[5] ~= pid then
    local st = redis.call('HGET', P .. 'p:' .. f[5], 'status')
    if st ~= 'FAILED' and st ~= 'ABANDONED' then return 9, 'reservation_id: already being paid by ' .. f[5] end
  end
  return 0, f[4]
end

local pid = redis.call('HGET', P .. 'pk:' .. user, key)
if pid then
  local p = P .. 'p:' .. pid
  local f = redis.call('HMGET', p, 'rid', 'status')
  if f[1] ~= rid then return {9, 'idempotency_key: already used for another reservation'} end
  if f[2] ~= 'ABANDONED' then return pay_reply(P, pid, 0) end
  local code, msg = payable(pid)
  if code ~= 0 then return {code, msg} end
  redis.call('HSET', p, 'status', 'SUBMITTING', 'updated', now, 'token', tok)
  redis.call('HSET', r, 'payment', pid)
  redis.call('ZADD', P .. 'pend', now, pid) -- unsettled payments, for ADAPTIVE admission (queue_admit)
  return pay_reply(P, pid, 2)
end
local code, total = payable(nil)
if code ~= 0 then return {code, total} end
redis.call('HSET', P .. 'p:' .. newpid, 'rid', rid, 'user', user, 'amount', total, 'key', key,
  'status', 'SUBMITTING', 'reason', '', 'created', now, 'updated', now, 'token', tok)
redis.call('HSET', P .. 'pk:' .. user, key, newpid)
redis.call('SADD', P .. 'pays', newpid)
redis.call('ZADD', P .. 'pend', now, newpid) -- unsettled payments, for ADAPTIVE admission (queue_admit)
redis.call('HSET', r, 'payment', newpid)
return pay_reply(P, newpid, 1)
