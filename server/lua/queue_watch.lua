-- queue_watch: the status of many tokens of one concert in one round trip, refreshing
-- the waiting ones' idle timers (queue_lib prepended). Watcher refreshes and the
-- per-user cap's probes use it.
-- KEYS: 1 q:wait (declares the slot)
-- ARGV: 1 P, 2 concert, 3..6 defaults (rate, max_active, active_ttl_ms, idle_timeout_ms),
--       then per token: n, token id (16 raw bytes), token
-- Returns {rate, phase, method, waiting, state1, value1, since1, user1, ...}: state 1
-- waiting (value: position, 0 in a pre-queue), 2 active (value: expiry ms, since:
-- admitted ms, user), 3 expired, 0 unknown.
local now = now_ms()
local pol = policy({ARGV[3], ARGV[4], ARGV[5], ARGV[6]})
local phase = sale_phase(now, pol)
local out = {effective_rate(pol), phase, pol.method, redis.call('ZCARD', P .. 'q:wait')}
for i = 7, #ARGV - 2, 3 do
  local m, score = find_waiting(ARGV[i], ARGV[i + 1])
  if m then
    local _, n = member_parts(m, score)
    seen(n, now, pol.idle)
    out[#out + 1] = 1
    out[#out + 1] = phase == 2 and 0 or redis.call('ZRANK', P .. 'q:wait', m) + 1
    out[#out + 1] = 0
    out[#out + 1] = ''
  else
    local tok = ARGV[i + 2]
    local e = redis.call('ZSCORE', P .. 'q:active', tok)
    local user = redis.call('HGET', P .. 'q:tok', tok)
    if e and tonumber(e) > now and user then
      out[#out + 1] = 2
      out[#out + 1] = tonumber(e)
      out[#out + 1] = tonumber(redis.call('HGET', P .. 'q:since', tok) or 0)
      out[#out + 1] = user
    else
      out[#out + 1] = user and 3 or 0
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = ''
    end
  end
end
return out
