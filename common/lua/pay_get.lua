-- pay_get: the owner's payment (GetPayment, and WatchPayment's first read and re-reads).
-- KEYS: 1 q:tok. ARGV: 1 P, 2 token, 3 payment id
-- Reply: pay_reply or {code, message}.
local P, tok, pid = ARGV[1], ARGV[2], ARGV[3]
local user = redis.call('HGET', P .. 'q:tok', tok)
if not user then
  local _, code, msg = active_user(P, tok, now_ms())
  return {code, msg}
end
local owner = redis.call('HGET', P .. 'p:' .. pid, 'user')
if not owner then return {5, 'payment_id: not found'} end
if owner ~= user then return {7, 'payment_id: belongs to another user'} end
return pay_reply(P, pid, 0)
