-- queue_status: where a token stands; refreshes a waiting token's idle timer
-- (queue_lib prepended). The server answers the common case, a waiting user of an
-- open queue, with plain pipelined reads (srv_queue.c "fast path"); this script is the
-- rest: pre-queued users, ACTIVE and ended tokens, and a cold server.
-- KEYS: 1 q:wait (declares the slot)
-- ARGV: 1 P, 2 concert, 3..6 defaults (rate, max_active, active_ttl_ms, idle_timeout_ms),
--       7 n, 8 token id (16 raw bytes), 9 token
-- Returns {state (0 unknown, 1 waiting, 2 active, 3 expired; -1 no such concert),
--          position (0 in a pre-queue), expires_at_ms, since_ms, rate, user, phase,
--          method, waiting, idle_timeout_ms, sale_at, now}
local now = now_ms()
local m, score = find_waiting(ARGV[7], ARGV[8])
if m then
  local pol = policy({ARGV[3], ARGV[4], ARGV[5], ARGV[6]})
  local user, n = member_parts(m, score)
  seen(n, now, pol.idle)
  local phase = sale_phase(now, pol)
  local pos = phase == 2 and 0 or redis.call('ZRANK', P .. 'q:wait', m) + 1
  return {1, pos, 0, 0, effective_rate(pol), user, phase, pol.method, redis.call('ZCARD', P .. 'q:wait'), pol.idle,
    pol.sale_at, now}
end
local tok = ARGV[9]
local user = redis.call('HGET', P .. 'q:tok', tok)
if not user then
  if redis.call('EXISTS', P .. 'concert') == 0 then return {-1} end
  return {0}
end
local e = redis.call('ZSCORE', P .. 'q:active', tok)
if e and tonumber(e) > now then
  return {2, 0, tonumber(e), tonumber(redis.call('HGET', P .. 'q:since', tok) or 0), 0, user}
end
return {3, 0, 0, 0, 0, user}
