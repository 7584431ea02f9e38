-- pay_abandon: Pay's deadline came before Kafka's acknowledgement: SUBMITTING ->
-- ABANDONED, atomically, so that Pay may answer UNAVAILABLE and the payment is never
-- debited, even if Kafka holds the request after all (payment-consumer fails ABANDONED
-- payments without a debit; only a retry of Pay with the same key submits it again).
-- Any other status is answered as it is: the request reached Kafka already (accepted,
-- or claimed by payment-consumer) and Pay reports that real state instead.
-- KEYS: 1 q:tok. ARGV: 1 P, 2 payment id. Reply: pay_reply or {5, message}.
local P, pid = ARGV[1], ARGV[2]
local p = P .. 'p:' .. pid
local st = redis.call('HGET', p, 'status')
if not st then return {5, 'payment_id: not found'} end
if st == 'SUBMITTING' then redis.call('HSET', p, 'status', 'ABANDONED', 'updated', now_ms()) end
return pay_reply(P, pid, 0)
