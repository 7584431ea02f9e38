-- pay_accepted: Kafka acknowledged the request: SUBMITTING -> PENDING. Any other status
-- stays as it is: PENDING or later (payment-consumer saw it first), or ABANDONED (Pay's
-- deadline came first and it answered UNAVAILABLE: then it must never be debited).
-- KEYS: 1 q:tok. ARGV: 1 P, 2 payment id. Reply: pay_reply or {5, message}.
local P, pid = ARGV[1], ARGV[2]
local p = P .. 'p:' .. pid
local st = redis.call('HGET', p, 'status')
if not st then return {5, 'payment_id: not found'} end
if st == 'SUBMITTING' then redis.call('HSET', p, 'status', 'PENDING', 'updated', now_ms()) end
return pay_reply(P, pid, 0)
