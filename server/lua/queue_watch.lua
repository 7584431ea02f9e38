-- queue_watch: the status of many watched tokens of one concert in one round trip,
-- refreshing the waiting ones' idle timers.
-- KEYS: 1 tok, 2 wait, 3 seen, 4 active, 5 policy
-- ARGV: 1 default rate, 2.. tokens
-- Returns {rate, state1, value1, state2, value2, ...}: state 1 waiting (value position),
-- 2 active (value expiry ms), 3 expired, 0 unknown.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rate = tonumber(redis.call('HGET', KEYS[5], 'rate') or ARGV[1])
local out = {rate}
for i = 2, #ARGV do
  local tok = ARGV[i]
  local r = redis.call('ZRANK', KEYS[2], tok)
  if r then
    redis.call('ZADD', KEYS[3], 'XX', now, tok)
    out[#out + 1] = 1
    out[#out + 1] = r + 1
  else
    local e = redis.call('ZSCORE', KEYS[4], tok)
    if e and tonumber(e) > now then
      out[#out + 1] = 2
      out[#out + 1] = tonumber(e)
    elseif redis.call('HEXISTS', KEYS[1], tok) == 1 then
      out[#out + 1] = 3
      out[#out + 1] = 0
    else
      out[#out + 1] = 0
      out[#out + 1] = 0
    end
  end
end
return out
