-- queue_admit: one admission tick for one concert. Any number of servers may run it:
-- the token bucket lives in Redis (keyed by Redis' own clock), so together they admit
-- at the configured rate and never above max_active.
-- KEYS: 1 users, 2 tok, 3 wait, 4 seen, 5 active, 6 gone, 7 adm (hash last,credit), 8 policy,
--       9 concert (hash), 10 holds (zset of live seat holds)
-- ARGV: defaults 1 rate/s, 2 max_active, 3 active_ttl_ms, 4 idle_timeout_ms, 5 gone_keep_ms
-- Returns {admitted, waiting, active, expired, idled, holds, exists, (user, token)*}:
-- a server stops ticking a concert with nobody waiting, active or holding seats (and
-- one that does not exist, for which nothing is written); the pairs are the ended
-- tokens forgotten now, for the server to drop from their users' records.
if redis.call('EXISTS', KEYS[9]) == 0 then return {0, 0, 0, 0, 0, 0, 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local p = redis.call('HMGET', KEYS[8], 'rate', 'max_active', 'active_ttl_ms', 'idle_timeout_ms')
local rate = tonumber(p[1] or ARGV[1])
local max_active = tonumber(p[2] or ARGV[2])
local ttl = tonumber(p[3] or ARGV[3])
local idle = tonumber(p[4] or ARGV[4])

-- An ended token reads EXPIRED for gone_keep_ms; `users` keeps pointing at it so
-- that the user's next join removes it (see queue_issue).
local function forget(tok)
  redis.call('ZADD', KEYS[6], now, tok)
end

-- Active tokens past their expiry.
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1000)
for _, tok in ipairs(expired) do
  redis.call('ZREM', KEYS[5], tok)
  forget(tok)
end
-- Waiting tokens nobody asked about for idle_timeout_ms.
local idled = {}
if idle > 0 then
  idled = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - idle, 'LIMIT', 0, 1000)
  for _, tok in ipairs(idled) do
    redis.call('ZREM', KEYS[3], tok)
    redis.call('ZREM', KEYS[4], tok)
    forget(tok)
  end
end
-- Forget ended tokens after a while (until then they read as EXPIRED).
local old = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - tonumber(ARGV[5]), 'LIMIT', 0, 1000)
local forgotten = {}
for _, tok in ipairs(old) do
  redis.call('ZREM', KEYS[6], tok)
  local u = redis.call('HGET', KEYS[2], tok)
  if u then
    if redis.call('HGET', KEYS[1], u) == tok then redis.call('HDEL', KEYS[1], u) end
    forgotten[#forgotten + 1] = u
    forgotten[#forgotten + 1] = tok
  end
  redis.call('HDEL', KEYS[2], tok)
end

-- Token bucket: credit grows with time at `rate`, capped so an idle queue cannot
-- bank a burst larger than half a second of admissions.
local st = redis.call('HMGET', KEYS[7], 'last', 'credit')
local last = tonumber(st[1]) or now
local credit = tonumber(st[2]) or 0
if now > last then credit = credit + (now - last) * rate / 1000 end
local cap = math.max(1, rate / 2)
if credit > cap then credit = cap end
local waiting = redis.call('ZCARD', KEYS[3])
local active = redis.call('ZCARD', KEYS[5])
local n = math.floor(credit)
if max_active >= 0 and n > max_active - active then n = max_active - active end
if n > waiting then n = waiting end
if n > 1000 then n = 1000 end
local admitted = 0
if n > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[3], n)
  for i = 1, #popped, 2 do
    redis.call('ZADD', KEYS[5], now + ttl, popped[i])
    redis.call('ZREM', KEYS[4], popped[i])
    admitted = admitted + 1
  end
  credit = credit - admitted
end
if waiting - admitted == 0 and credit > 1 then credit = 1 end
redis.call('HSET', KEYS[7], 'last', now, 'credit', tostring(credit))
local out = {admitted, waiting - admitted, active + admitted, #expired, #idled, redis.call('ZCARD', KEYS[10]), 1}
for _, v in ipairs(forgotten) do out[#out + 1] = v end
return out
