-- pay_accepted: Kafka acknowledged the request: SUBMITTING -> PENDING (a consumer
-- may already have finished it; then it stays as it is).
-- KEYS: 1 q:tok. ARGV: 1 P, 2 payment id
local P, pid = ARGV[1], ARGV[2]
local p = P .. 'p:' .. pid
if redis.call('HGET', p, 'status') == 'SUBMITTING' then
  redis.call('HSET', p, 'status', 'PENDING', 'updated', now_ms())
end
return pay_reply(P, pid, 0)
