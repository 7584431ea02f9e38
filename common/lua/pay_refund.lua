-- pay_refund: gives back a failed payment's debit, once. A payment never debited
-- needs nothing. KEYS: 1 bal, 2 pay, 3 cc:{w:<user>}:refund (payment id -> amount)
-- ARGV: 1 payment id. Returns 'NOT_DEBITED' or 'REFUNDED'.
local amount = redis.call('HGET', KEYS[2], ARGV[1])
if not amount then return 'NOT_DEBITED' end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'REFUNDED' end
redis.call('INCRBY', KEYS[1], amount)
redis.call('HSET', KEYS[3], ARGV[1], amount)
return 'REFUNDED'
