-- pay_submitted: the end of Pay's wait for Kafka, atomically (concert slot). ARGV[3]:
--   PENDING   Kafka acknowledged the request: SUBMITTING -> PENDING.
--   ABANDONED Pay's deadline came first: SUBMITTING -> ABANDONED, so that Pay may
--             answer UNAVAILABLE and the payment is never debited, even if Kafka holds
--             the request after all (payment-consumer fails ABANDONED payments without
--             a debit; only a retry of Pay with the same key submits it again).
-- Any other status stays as it is and is answered: PENDING or later (the request was
-- seen in Kafka first, by an acknowledgement or by payment-consumer's claim), or
-- ABANDONED (the deadline came first: then it must never be debited).
-- KEYS: 1 q:tok. ARGV: 1 P, 2 payment id, 3 PENDING|ABANDONED. Reply: pay_reply or {5, message}.
local P, pid = ARGV[1], ARGV[2]
local p = P .. 'p:' .. pid
local st = redis.call('HGET', p, 'status')
if not st then return {5, 'payment_id: not found'} end
if st == 'SUBMITTING' and (ARGV[3] == 'PENDING' or ARGV[3] == 'ABANDONED') then
  redis.call('HSET', p, 'status', ARGV[3], 'updated', now_ms())
end
return pay_reply(P, pid, 0)
