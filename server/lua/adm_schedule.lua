-- adm_schedule: creates a schedule and its seat map.
-- KEYS: 1 concert hash. ARGV: 1 P, 2 schedule, 3 starts ms, 4.. (first, last, price)*
-- Returns {0, total} or {code, message}.
local P, sched = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
local meta = P .. 's:' .. sched .. ':meta'
if redis.call('EXISTS', meta) == 1 then return {6, 'schedule_id: ' .. sched .. ' already exists'} end
local pkey = P .. 's:' .. sched .. ':price'
local total = 0
for i = 4, #ARGV, 3 do
  local first, last, price = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2]
  local batch = {}
  for s = first, last do
    batch[#batch + 1] = s
    batch[#batch + 1] = price
    if #batch >= 2000 then
      redis.call('HSET', pkey, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call('HSET', pkey, unpack(batch)) end
  total = total + last - first + 1
end
redis.call('HSET', meta, 'total', total, 'held', 0, 'sold', 0, 'starts', ARGV[3])
redis.call('ZADD', P .. 'schedules', tonumber(ARGV[3]), sched)
return {0, total}
