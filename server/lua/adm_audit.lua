-- adm_audit: the concert-slot half of the audit, one bounded chunk per call so that
-- Redis never spends long on it and never builds a giant reply (wallet_audit.lua is
-- the user-slot half; srv_admin.c drives the chunks and puts the report together).
-- KEYS: 1 concert hash. ARGV: 1 mode, 2 P, then by mode:
--   'start'                    -> {0, (schedule, held counter, sold counter)*}
--   'seats', 3 schedule, 4 cursor, 5 count
--                              -> {0, next cursor, (seat, kind 1 held / 2 sold, problem or '')*}
--   'pays', 3 cursor, 4 count  -> {0, next cursor, (user, pid, status, amount, rid, problem or '')*}
-- or {5, message} when the concert does not exist.
local mode, P = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
local out = {0}
if mode == 'start' then
  for _, s in ipairs(redis.call('ZRANGE', P .. 'schedules', 0, -1)) do
    local m = redis.call('HMGET', P .. 's:' .. s .. ':meta', 'held', 'sold')
    out[#out + 1] = s
    out[#out + 1] = tonumber(m[1] or '0')
    out[#out + 1] = tonumber(m[2] or '0')
  end
  return out
end
if mode == 'seats' then
  local s = ARGV[3]
  local page = redis.call('HSCAN', P .. 's:' .. s .. ':seat', ARGV[4], 'COUNT', ARGV[5])
  out[2] = page[1]
  local states = page[2]
  for i = 1, #states, 2 do
    local seat, v = states[i], states[i + 1]
    local kind, rid = string.match(v, '^([HS])|([^|]+)')
    local r = redis.call('HMGET', P .. 'r:' .. (rid or '?'), 'status', 'seats', 'sched', 'payment')
    local problem, k = '', 0
    if kind == 'S' then
      k = 2
      if r[1] ~= 'PAID' then problem = s .. '/' .. seat .. ': SOLD to ' .. tostring(rid) .. ' which is ' .. tostring(r[1])
      else
        local ps = r[4] and redis.call('HGET', P .. 'p:' .. r[4], 'status')
        if ps ~= 'COMPLETED' then problem = s .. '/' .. seat .. ': SOLD without a COMPLETED payment' end
      end
    elseif kind == 'H' then
      k = 1
      if r[1] ~= 'HELD' then problem = s .. '/' .. seat .. ': held by ' .. rid .. ' which is ' .. tostring(r[1]) end
    else
      problem = s .. '/' .. seat .. ': unreadable state ' .. v
    end
    if problem == '' and r[2] and (r[3] ~= s or not string.find(',' .. r[2] .. ',', ',' .. seat .. ',', 1, true)) then
      problem = s .. '/' .. seat .. ': not among the seats of its reservation ' .. tostring(rid)
    end
    out[#out + 1] = seat
    out[#out + 1] = k
    out[#out + 1] = problem
  end
  return out
end
if mode == 'pays' then
  local page = redis.call('SSCAN', P .. 'pays', ARGV[3], 'COUNT', ARGV[4])
  out[2] = page[1]
  for _, pid in ipairs(page[2]) do
    local p = redis.call('HMGET', P .. 'p:' .. pid, 'status', 'rid', 'user', 'amount')
    local problem = ''
    if p[1] == 'COMPLETED' then
      local r = redis.call('HMGET', P .. 'r:' .. tostring(p[2]), 'status', 'payment', 'total')
      if r[1] ~= 'PAID' or r[2] ~= pid then
        problem = 'payment ' .. pid .. ' COMPLETED but its reservation is ' .. tostring(r[1])
      elseif r[3] ~= p[4] then
        problem = 'payment ' .. pid .. ' amount ' .. tostring(p[4]) .. ' differs from the price'
      end
    end
    out[#out + 1] = p[3] or ''
    out[#out + 1] = pid
    out[#out + 1] = p[1] or ''
    out[#out + 1] = p[4] or '0'
    out[#out + 1] = p[2] or ''
    out[#out + 1] = problem
  end
  return out
end
return {3, 'audit: unknown step ' .. tostring(mode)}
