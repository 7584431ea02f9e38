-- queue_leave: gives up a token's place or admission (queue_lib prepended). Idempotent.
-- The user's entry in `users` keeps pointing at the ended token, so that joining again
-- removes it (queue_issue) instead of leaving one ended token behind per join/leave
-- cycle. A pre-queued user who leaves before the sale opens is out of the draw.
-- KEYS: 1 q:wait (declares the slot)
-- ARGV: 1 P, 2 concert, 3 n, 4 token id (16 raw bytes), 5 token
-- Returns {previous state (0 unknown, 1 waiting, 2 active, 3 expired; -1 no such
--          concert), user}
local now = now_ms()
local tok = ARGV[5]
local m, score = find_waiting(ARGV[3], ARGV[4])
if m then
  local user, n, _, pre = unwait(m, score)
  if pre then
    local sale_at = tonumber(redis.call('HGET', P .. 'policy', 'sale_at') or 0)
    left_prequeue(n, now, {sale_at = sale_at})
  end
  ended(user, tok, now)
  return {1, user}
end
local user = redis.call('HGET', P .. 'q:tok', tok)
if not user then
  if redis.call('EXISTS', P .. 'concert') == 0 then return {-1, ''} end
  return {0, ''}
end
local prev = 3
local e = redis.call('ZSCORE', P .. 'q:active', tok)
if e then
  if tonumber(e) > now then prev = 2 end
  redis.call('ZREM', P .. 'q:active', tok)
end
if prev ~= 3 or not redis.call('ZSCORE', P .. 'q:gone', tok) then
  redis.call('ZADD', P .. 'q:gone', now, tok)
end
return {prev, user}
