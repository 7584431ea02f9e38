-- adm_audit: the concert-slot half of the audit (wallet_audit.lua is the user-slot half).
-- KEYS: 1 concert hash. ARGV: 1 P
-- Returns {0, sold, held, completed, failed, in_flight, n_problems, problems...,
--          (user, pid, status, amount)*} or {5, message}.
local P = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
local problems = {}
local function bad(s) if #problems < 100 then problems[#problems + 1] = s end end
local sold, held = 0, 0
for _, s in ipairs(redis.call('ZRANGE', P .. 'schedules', 0, -1)) do
  local m = redis.call('HMGET', P .. 's:' .. s .. ':meta', 'held', 'sold')
  local states = redis.call('HGETALL', P .. 's:' .. s .. ':seat')
  local ns, nh = 0, 0
  for i = 1, #states, 2 do
    local seat, v = states[i], states[i + 1]
    local kind, rid = string.match(v, '^([HS])|([^|]+)')
    local r = redis.call('HMGET', P .. 'r:' .. (rid or '?'), 'status', 'seats', 'sched', 'payment')
    if kind == 'S' then
      ns = ns + 1
      if r[1] ~= 'PAID' then bad(s .. '/' .. seat .. ': SOLD to ' .. tostring(rid) .. ' which is ' .. tostring(r[1])) end
      local ps = r[4] and redis.call('HGET', P .. 'p:' .. r[4], 'status')
      if ps ~= 'COMPLETED' then bad(s .. '/' .. seat .. ': SOLD without a COMPLETED payment') end
    elseif kind == 'H' then
      nh = nh + 1
      if r[1] ~= 'HELD' then bad(s .. '/' .. seat .. ': held by ' .. rid .. ' which is ' .. tostring(r[1])) end
    else
      bad(s .. '/' .. seat .. ': unreadable state ' .. v)
    end
    if r[2] and (r[3] ~= s or not string.find(',' .. r[2] .. ',', ',' .. seat .. ',', 1, true)) then
      bad(s .. '/' .. seat .. ': not among the seats of its reservation ' .. tostring(rid))
    end
  end
  if ns ~= tonumber(m[2] or '0') then bad(s .. ': ' .. ns .. ' seats SOLD, counter says ' .. tostring(m[2])) end
  if nh ~= tonumber(m[1] or '0') then bad(s .. ': ' .. nh .. ' seats held, counter says ' .. tostring(m[1])) end
  sold, held = sold + ns, held + nh
end
local completed, failed, inflight = 0, 0, 0
local paid = {}
local pays = {}
for _, pid in ipairs(redis.call('SMEMBERS', P .. 'pays')) do
  local p = redis.call('HMGET', P .. 'p:' .. pid, 'status', 'rid', 'user', 'amount')
  if p[1] == 'COMPLETED' then
    completed = completed + 1
    local r = redis.call('HMGET', P .. 'r:' .. p[2], 'status', 'payment', 'total')
    if r[1] ~= 'PAID' or r[2] ~= pid then
      bad('payment ' .. pid .. ' COMPLETED but its reservation is ' .. tostring(r[1]))
    end
    if r[3] ~= p[4] then bad('payment ' .. pid .. ' amount ' .. tostring(p[4]) .. ' differs from the price') end
    if paid[p[2]] then bad('reservation ' .. p[2] .. ' paid twice') end
    paid[p[2]] = true
  elseif p[1] == 'FAILED' then
    failed = failed + 1
  else
    inflight = inflight + 1
  end
  pays[#pays + 1] = p[3] or ''
  pays[#pays + 1] = pid
  pays[#pays + 1] = p[1] or ''
  pays[#pays + 1] = p[4] or '0'
end
local out = {0, sold, held, completed, failed, inflight, #problems}
for _, v in ipairs(problems) do out[#out + 1] = v end
for _, v in ipairs(pays) do out[#out + 1] = v end
return out
