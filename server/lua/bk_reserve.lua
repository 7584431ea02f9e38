-- bk_reserve: holds seats, all or nothing. A seat whose hold has lapsed is free at
-- once (its reservation is expired here), so expiry is exact to the millisecond.
-- KEYS: 1 q:tok (declares the slot)
-- ARGV: 1 P, 2 token, 3 schedule, 4 default hold ttl ms, 5 default cap, 6 new rid, 7.. seats
local P, tok, sched, rid = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local now = now_ms()
local user, code, msg = active_user(P, tok, now)
if not user then return {code, msg} end
local meta = P .. 's:' .. sched .. ':meta'
if redis.call('EXISTS', meta) == 0 then return {5, 'schedule_id: no such schedule in this concert'} end
local pol = redis.call('HMGET', P .. 'policy', 'hold_ttl_ms', 'max_seats_per_user')
local ttl = tonumber(pol[1] or ARGV[4])
local cap = tonumber(pol[2] or ARGV[5])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ures:' .. user, '-inf', now)) do
  release(P, old, 'EXPIRED')
end
local nseats = #ARGV - 6
local held = tonumber(redis.call('HGET', P .. 'uheld', user) or '0')
if held + nseats > cap then
  return {8, 'seat_numbers: at most ' .. cap .. ' seats may be held at once (' .. held .. ' held now)'}
end
local skey, pkey = P .. 's:' .. sched .. ':seat', P .. 's:' .. sched .. ':price'
local total, seats = 0, {}
for i = 7, #ARGV do
  local s = ARGV[i]
  local price = redis.call('HGET', pkey, s)
  if not price then return {5, 'seat_numbers: seat ' .. s .. ' does not exist'} end
  local v = redis.call('HGET', skey, s)
  if v then
    if string.sub(v, 1, 1) == 'S' then return {9, 'seat_numbers: seat ' .. s .. ' is sold'} end
    local other, exp = string.match(v, '^H|([^|]+)|(%d+)$')
    if tonumber(exp) > now then return {9, 'seat_numbers: seat ' .. s .. ' is held'} end
    release(P, other, 'EXPIRED')
  end
  total = total + tonumber(price)
  seats[#seats + 1] = s
end
local exp = now + ttl
local mark = 'H|' .. rid .. '|' .. exp
for _, s in ipairs(seats) do redis.call('HSET', skey, s, mark) end
redis.call('HSET', P .. 'r:' .. rid, 'user', user, 'token', tok, 'sched', sched,
  'seats', table.concat(seats, ','), 'n', nseats, 'total', total, 'status', 'HELD',
  'exp', exp, 'created', now)
redis.call('ZADD', P .. 'holds', exp, rid)
redis.call('ZADD', P .. 'ures:' .. user, exp, rid)
redis.call('HINCRBY', P .. 'uheld', user, nseats)
redis.call('HINCRBY', meta, 'held', nseats)
return resv_reply(P, rid, now)
