-- pay_commit: settles a payment after pay_claim and pay_debit (concert slot).
-- DEBITED and the hold still live: seats SOLD, reservation PAID, payment COMPLETED,
-- and the user's queue token expired so the next waiting user can be admitted (the
-- one queue key a payment touches, in the same slot, so it is atomic with the sale).
-- Otherwise the payment FAILS with a reason (the caller then runs pay_refund).
-- A payment already COMPLETED or FAILED is answered as it is (redelivery); only a
-- claimed (PENDING) payment can complete.
-- KEYS: 1 q:tok. ARGV: 1 P, 2 payment id, 3 'DEBITED' or 'INSUFFICIENT'
-- Reply: pay_reply, or {5, message} for an unknown payment.
local P, pid = ARGV[1], ARGV[2]
local p = P .. 'p:' .. pid
local f = redis.call('HMGET', p, 'status', 'rid', 'user', 'token')
if not f[1] then return {5, 'payment ' .. pid .. ' not found'} end
if f[1] == 'COMPLETED' or f[1] == 'FAILED' then return pay_reply(P, pid, 0) end
local now = now_ms()
redis.call('ZREM', P .. 'pend', pid) -- settled now (pend: unsettled payments, see pay_begin)
local function fail(reason)
  redis.call('HSET', p, 'status', 'FAILED', 'reason', reason, 'updated', now)
  return pay_reply(P, pid, 0)
end
if f[1] ~= 'PENDING' then return fail('not confirmed in time (Pay answered UNAVAILABLE)') end
if ARGV[3] == 'INSUFFICIENT' then return fail('insufficient balance') end
local rid, user = f[2], f[3]
local r = P .. 'r:' .. rid
local g = redis.call('HMGET', r, 'status', 'exp', 'payment', 'sched', 'seats', 'n')
if g[3] ~= pid then return fail('reservation is being paid by another payment') end
if g[1] == 'HELD' and tonumber(g[2]) <= now then
  release(P, rid, 'EXPIRED')
  g[1] = 'EXPIRED'
end
if g[1] ~= 'HELD' then
  return fail(g[1] == 'EXPIRED' and 'hold expired' or ('reservation ' .. string.lower(g[1] or 'gone')))
end
local skey = P .. 's:' .. g[4] .. ':seat'
for s in string.gmatch(g[5], '[^,]+') do redis.call('HSET', skey, s, 'S|' .. rid) end
local n = tonumber(g[6])
local meta = P .. 's:' .. g[4] .. ':meta'
redis.call('HINCRBY', meta, 'held', -n)
redis.call('HINCRBY', meta, 'sold', n)
redis.call('HINCRBY', P .. 'uheld', user, -n)
redis.call('ZREM', P .. 'holds', rid)
redis.call('ZREM', P .. 'ures:' .. user, rid)
redis.call('HSET', r, 'status', 'PAID', 'paid', now)
redis.call('HSET', p, 'status', 'COMPLETED', 'updated', now)
local tok = f[4]
if redis.call('ZREM', P .. 'q:active', tok) == 1 then redis.call('ZADD', P .. 'q:gone', now, tok) end
if redis.call('HGET', P .. 'q:users', user) == tok then redis.call('HDEL', P .. 'q:users', user) end
return pay_reply(P, pid, 0)
