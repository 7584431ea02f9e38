-- adapt_health: one server's booking call counts into the shared window (global key).
-- KEYS: 1 cc:health (hash: w window number, c calls, e errors, pc/pe the previous window's)
-- ARGV: 1 calls, 2 errors, 3 window length ms
-- Returns {calls, errors} of the last complete window (every server's).
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local len = tonumber(ARGV[3])
local w = math.floor(now / len)
local h = redis.call('HMGET', KEYS[1], 'w', 'c', 'e', 'pc', 'pe')
local cw = tonumber(h[1])
if ARGV[1] == '0' and ARGV[2] == '0' then
  -- Nothing to add: read only (an idle server writes nothing).
  if cw == w then return {tonumber(h[4] or 0), tonumber(h[5] or 0)} end
  if cw == w - 1 then return {tonumber(h[2] or 0), tonumber(h[3] or 0)} end
  return {0, 0}
end
if cw == w then
  redis.call('HINCRBY', KEYS[1], 'c', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'e', ARGV[2])
  return {tonumber(h[4] or 0), tonumber(h[5] or 0)}
end
local pc, pe = 0, 0
if cw == w - 1 then pc, pe = tonumber(h[2] or 0), tonumber(h[3] or 0) end
redis.call('HSET', KEYS[1], 'w', w, 'c', ARGV[1], 'e', ARGV[2], 'pc', pc, 'pe', pe)
redis.call('PEXPIRE', KEYS[1], len * 10)
return {pc, pe}
