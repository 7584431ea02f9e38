-- adm_stats: queue and seat counts of one concert.
-- KEYS: 1 concert hash. ARGV: 1 P
-- Returns {0, waiting, active, (schedule, total, held, sold)*} or {5, message}.
local P = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {0, redis.call('ZCARD', P .. 'q:wait'), redis.call('ZCOUNT', P .. 'q:active', '(' .. now, '+inf')}
for _, s in ipairs(redis.call('ZRANGE', P .. 'schedules', 0, -1)) do
  local m = redis.call('HMGET', P .. 's:' .. s .. ':meta', 'total', 'held', 'sold')
  out[#out + 1] = s
  out[#out + 1] = tonumber(m[1])
  out[#out + 1] = tonumber(m[2])
  out[#out + 1] = tonumber(m[3])
end
return out
