-- bk_list: schedules of the concert (ARGV[3] == '') or the seats of one schedule.
-- KEYS: 1 q:tok. ARGV: 1 P, 2 token, 3 schedule or ''
-- Schedules: {0, id, starts, total, left, id, starts, total, left, ...}
-- Seats: {0, number, price, state(1 available, 2 held, 3 sold), ...}
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
if redis.call('EXISTS', P .. 's:' .. sched .. ':meta') == 0 then
  return {5, 'schedule_id: no such schedule in this concert'}
end
local prices = redis.call('HGETALL', P .. 's:' .. sched .. ':price')
local states = redis.call('HGETALL', P .. 's:' .. sched .. ':seat')
local st = {}
for i = 1, #states, 2 do
  local v = states[i + 1]
  if string.sub(v, 1, 1) == 'S' then
    st[states[i]] = 3
  else
    local exp = string.match(v, '|(%d+)$')
    if tonumber(exp) > now then st[states[i]] = 2 end
  end
end
for i = 1, #prices, 2 do
  out[#out + 1] = tonumber(prices[i])
  out[#out + 1] = tonumber(prices[i + 1])
  out[#out + 1] = st[prices[i]] or 1
end
return out
