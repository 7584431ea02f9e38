-- adm_concert: creates a concert. KEYS: 1 concert hash. ARGV: 1 concert id, 2 name
-- Returns {0, created_ms} or {6, message}.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then return {6, 'concert_id: ' .. ARGV[1] .. ' already exists'} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'created', now)
return {0, now}
