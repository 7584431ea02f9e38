-- bk_list: schedules of the concert (ARGV[3] == ''), or the check before the server
-- serves one schedule's seat map from its cache (srv_seatmap.c reads the seats in
-- chunks; no script walks 100,000 fields).
-- KEYS: 1 q:tok. ARGV: 1 P, 2 token, 3 schedule or ''
-- Schedules: {0, id, starts, total, left, id, starts, total, left, ...}
-- Seat map check: {0, now ms (Redis' clock, for lapsed holds), total seats}
local P, tok, sched = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local user, code, msg = active_user(P, tok, now)
if not user then return {code, msg} end
local out = {0}
if sched == '' then
  local s = redis.call('ZRANGE', P .. 'schedules', 0, -1, 'WITHSCORES')
  for i = 1, #s, 2 do
    local m = redis.call('HMGET', P .. 's:' .. s[i] .. ':meta', 'total', 'sold', 'held')
    local total = tonumber(m[1] or '0')
    out[#out + 1] = s[i]
    out[#out + 1] = tonumber(s[i + 1])
    out[#out + 1] = total
    out[#out + 1] = total - tonumber(m[2] or '0') - tonumber(m[3] or '0')
  end
  return out
end
local total = redis.call('HGET', P .. 's:' .. sched .. ':meta', 'total')
if not total then return {5, 'schedule_id: no such schedule in this concert'} end
return {0, now, tonumber(total)}
