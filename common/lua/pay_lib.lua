-- pay_lib: helpers of the payment scripts (prepended after bk_lib.lua; not a script of
-- its own). Every payment script answers with pay_reply (decoded in exactly one place,
-- cc_pay_decode in common/cc_pay.c) or with {grpc_code, message}.
-- Payment statuses in p:<pid>.status: SUBMITTING (Pay is waiting for Kafka), PENDING
-- (in Kafka), COMPLETED, FAILED, ABANDONED (Pay answered UNAVAILABLE: never debited).

-- {0, pid, rid, user, amount, status, reason, key, created, updated, new,
--  sched, seats, paid}: the payment, then its reservation's schedule, seats ("3,4")
-- and when it was paid (for the PAID reservation event). `new`: 1 created now,
-- 2 submitted again, 3 failed now because Pay had abandoned it.
local function pay_reply(P, pid, new)
  local f = redis.call('HMGET', P .. 'p:' .. pid, 'rid', 'user', 'amount', 'status', 'reason', 'key',
    'created', 'updated')
  local g = {false, false, false}
  if f[1] then g = redis.call('HMGET', P .. 'r:' .. f[1], 'sched', 'seats', 'paid') end
  return {0, pid, f[1], f[2], tonumber(f[3]), f[4], f[5], f[6], tonumber(f[7]), tonumber(f[8]), new,
    g[1], g[2], tonumber(g[3])}
end
