-- pay_debit: debits a payment once (by payment id) if the balance covers it.
-- KEYS: 1 cc:{w:<user>}:bal, 2 cc:{w:<user>}:pay (payment id -> amount)
-- ARGV: 1 payment id, 2 amount. Returns 'DEBITED' or 'INSUFFICIENT'.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'DEBITED' end
local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
if bal < tonumber(ARGV[2]) then return 'INSUFFICIENT' end
redis.call('DECRBY', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 'DEBITED'
