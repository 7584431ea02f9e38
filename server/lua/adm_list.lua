-- adm_list: one page of the concert catalogue, in concert_id (byte) order.
-- KEYS: 1 cc:concerts (hash id -> "created|name"), 2 {cc:concerts}:ids (zset of the
-- ids, every score 0, so ZRANGEBYLEX pages them; its hash tag puts it in KEYS[1]'s
-- slot). ARGV: 1 the last id of the previous page ('' for the first), 2 how many.
-- Reply: {0, id, "created|name", id, ...}; an id without a hash entry (its HSET was
-- lost) comes with '' and is skipped by the server, which still pages past it.
if redis.call('ZCARD', KEYS[2]) < redis.call('HLEN', KEYS[1]) then
  -- Concerts the index does not know (created before it existed, or a lost ZADD):
  -- index every id once; ZADD of a known member changes nothing.
  local ids = redis.call('HKEYS', KEYS[1])
  for i = 1, #ids, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #ids) do
      args[#args + 1] = 0
      args[#args + 1] = ids[j]
    end
    redis.call('ZADD', KEYS[2], unpack(args))
  end
end
local min = ARGV[1] == '' and '-' or '(' .. ARGV[1]
local ids = redis.call('ZRANGEBYLEX', KEYS[2], min, '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {0}
if #ids == 0 then return out end
local vals = redis.call('HMGET', KEYS[1], unpack(ids))
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = vals[i] or ''
end
return out
