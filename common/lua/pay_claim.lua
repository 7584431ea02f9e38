-- pay_claim: payment-consumer's first step for a PaymentRequested read from Kafka
-- (concert slot). The message is in Kafka, so the request is durable: SUBMITTING ->
-- PENDING (Pay's abandon can no longer win). A payment Pay ABANDONED (it answered
-- UNAVAILABLE) fails here, never debited. Anything else is answered as it is.
-- KEYS: 1 q:tok. ARGV: 1 P, 2 payment id, 3 user id, 4 amount (from the message)
-- Reply: pay_reply (new = 3 when failed here), {5, message} for an unknown payment,
-- {9, message} when the message does not match the record (user or amount).
local P, pid = ARGV[1], ARGV[2]
local p = P .. 'p:' .. pid
local f = redis.call('HMGET', p, 'status', 'user', 'amount')
if not f[1] then return {5, 'payment ' .. pid .. ' not found'} end
if f[2] ~= ARGV[3] or f[3] ~= ARGV[4] then
  return {9, 'payment ' .. pid .. ' is for user ' .. tostring(f[2]) .. ' amount ' .. tostring(f[3])}
end
if f[1] == 'SUBMITTING' then
  redis.call('HSET', p, 'status', 'PENDING', 'updated', now_ms())
elseif f[1] == 'ABANDONED' then
  redis.call('HSET', p, 'status', 'FAILED', 'reason', 'not confirmed in time (Pay answered UNAVAILABLE)',
    'updated', now_ms())
  return pay_reply(P, pid, 3)
end
return pay_reply(P, pid, 0)
