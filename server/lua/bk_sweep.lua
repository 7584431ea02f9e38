-- bk_sweep: expires the concert's lapsed holds (run by every server's tick, so
-- reservations are reported expired within a tick of their deadline).
-- KEYS: 1 holds. ARGV: 1 P
-- Returns the expired reservation ids.
local P = ARGV[1]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', P .. 'holds', '-inf', now, 'LIMIT', 0, 500)
local out = {}
for _, rid in ipairs(due) do
  if release(P, rid, 'EXPIRED') then out[#out + 1] = rid else redis.call('ZREM', P .. 'holds', rid) end
end
return out
