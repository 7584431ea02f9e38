-- adm_policy: sets (ARGV pairs) and reads a concert's policy.
-- KEYS: 1 concert hash, 2 policy hash. ARGV: field, value, ...
-- Returns {0, field, value, ...} (only the fields set for this concert) or {5, message}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
if #ARGV > 0 then redis.call('HSET', KEYS[2], unpack(ARGV)) end
local out = {0}
for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do out[#out + 1] = v end
return out
