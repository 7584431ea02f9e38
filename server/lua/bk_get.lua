-- bk_get: reads (ARGV[3] == 'get') or cancels ('cancel') the caller's reservation.
-- KEYS: 1 q:tok. ARGV: 1 P, 2 token, 3 action, 4 rid
local P, tok, action, rid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local user, code, msg = active_user(P, tok, now)
if not user then return {code, msg} end
local r = P .. 'r:' .. rid
local owner = redis.call('HGET', r, 'user')
if not owner then return {5, 'reservation_id: not found'} end
if owner ~= user then return {7, 'reservation_id: belongs to another user'} end
if action == 'cancel' then
  local st = redis.call('HGET', r, 'status')
  if st == 'PAID' or st == 'PAYMENT_PENDING' then
    return {9, 'reservation_id: already ' .. (st == 'PAID' and 'paid' or 'being paid')}
  end
  if st == 'HELD' then
    local exp = tonumber(redis.call('HGET', r, 'exp'))
    release(P, rid, exp <= now and 'EXPIRED' or 'CANCELLED')
  end
end
return resv_reply(P, rid, now)
