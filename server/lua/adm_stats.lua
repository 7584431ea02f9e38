-- adm_stats: queue and seat counts of one concert.
-- KEYS: 1 concert hash. ARGV: 1 P, 2 the server's default admission rate
-- Returns {0, waiting, active, effective admission rate, (schedule, total, held, sold)*}
-- or {5, message}. The effective rate is the one the last admission tick used (the
-- adaptive controller's under ADAPTIVE), else the policy's.
local P = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rate = tonumber(redis.call('HGET', P .. 'q:adm', 'eff') or redis.call('HGET', P .. 'policy', 'rate') or ARGV[2])
local out = {0, redis.call('ZCARD', P .. 'q:wait'), redis.call('ZCOUNT', P .. 'q:active', '(' .. now, '+inf'), rate}
for _, s in ipairs(redis.call('ZRANGE', P .. 'schedules', 0, -1)) do
  local m = redis.call('HMGET', P .. 's:' .. s .. ':meta', 'total', 'held', 'sold')
  out[#out + 1] = s
  out[#out + 1] = tonumber(m[1])
  out[#out + 1] = tonumber(m[2])
  out[#out + 1] = tonumber(m[3])
end
return out
