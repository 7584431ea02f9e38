-- queue_admit: one admission tick for one concert (queue_lib prepended). Any number of
-- servers may run it: the token bucket, the adaptive controller's rate and the idle
-- sweep's cursor live in Redis (on Redis' own clock), so together they admit at the
-- configured rate and never above max_active.
-- KEYS: 1 q:wait (declares the slot)
-- ARGV: 1 P, 2 concert, 3..6 defaults (rate, max_active, active_ttl_ms, idle_timeout_ms),
--       7 gone_keep_ms, 8 random hex (the OS CSPRNG's, for RANDOM picks),
--       adaptive admission: 9 booking calls and 10 errors in the last window (every
--       server's), 11 recompute interval ms, 12 pending-payment age target ms,
--       13 unsettled-payment target, 14 booking error rate target (per mille)
-- Returns {admitted, waiting, active, expired, idled, holds, exists, now, rate,
--          idle_timeout_ms, method, sale_at, health, (user, token)*}: a server stops
-- ticking a concert with nobody waiting, active or holding seats (and one that does
-- not exist, for which nothing is written); the pairs are the ended tokens forgotten
-- now, for the server to drop from their users' records. health: the controller's
-- last verdict (0 healthy or FIXED, 1 payments pending too long, 2 too many unsettled,
-- 3 booking errors).
if redis.call('EXISTS', P .. 'concert') == 0 then return {0, 0, 0, 0, 0, 0, 0} end
local now = now_ms()
local pol = policy({ARGV[3], ARGV[4], ARGV[5], ARGV[6]})

-- Active tokens past their expiry read EXPIRED from now on.
local expired = redis.call('ZRANGEBYSCORE', P .. 'q:active', '-inf', now, 'LIMIT', 0, 1000)
for _, tok in ipairs(expired) do
  redis.call('ZREM', P .. 'q:active', tok)
  redis.call('ZADD', P .. 'q:gone', now, tok)
end

-- ---- idle sweep ----
-- A pass per epoch: chunk by chunk (at most 8 per tick), the waiting users with no
-- bit in any of the three seen slots are dropped (at most 1000 per tick). After a
-- chunk is done, its slot for the next epoch is cleared. A pass only runs in its own
-- epoch (so it never clears bits written in a later one), and not in the first two
-- epochs after the idle timeout changed (so no slot holds bits of another length).
local function sweep()
  if pol.idle <= 0 then return 0 end
  local L = epoch_len(pol.idle)
  local e = math.floor(now / L)
  local ep = P .. 'q:ep'
  local st = redis.call('HMGET', ep, 'L', 'since', 'pass', 'c', 'b', 'lo')
  local since, pass, c, b, lo = tonumber(st[2]), tonumber(st[3]), tonumber(st[4]), tonumber(st[5]), tonumber(st[6]) or 0
  if tonumber(st[1]) ~= L or not since then
    redis.call('HSET', ep, 'L', L, 'since', e, 'pass', -1)
    return 0
  end
  if pass ~= e then
    if e < since + 2 then return 0 end
    pass, c, b = e, lo, -1
  end
  if c < 0 then return 0 end -- this epoch's pass is done
  local hi = math.floor((tonumber(redis.call('GET', P .. 'q:seq')) or 0) / CHUNK)
  local slot = e % 3
  local budget, visited, idled = 1000, 0, 0
  local tmp, tmp2 = P .. 'q:idle', P .. 'q:idle2'
  while c >= 0 and c <= hi and budget > 0 and visited < 8 do
    local hk = P .. 'q:here:' .. c
    local s0, s1, s2 = P .. 'q:seen:0:' .. c, P .. 'q:seen:1:' .. c, P .. 'q:seen:2:' .. c
    if b < 0 then
      visited = visited + 1
      if redis.call('BITCOUNT', hk) == 0 then
        -- Nobody waits in this chunk: its bitmaps go (and the sweep starts above it).
        redis.call('DEL', hk, s0, s1, s2)
        if c == lo then lo = c + 1 end
        c = c + 1
      else
        -- idle = here AND NOT (seen0 OR seen1 OR seen2)
        redis.call('BITOP', 'OR', tmp, s0, s1, s2)
        redis.call('BITOP', 'AND', tmp2, hk, tmp)
        redis.call('BITOP', 'XOR', tmp, hk, tmp2)
        b = 0
      end
    else
      local pos = redis.call('BITPOS', tmp, 1, b, -1, 'BIT')
      if pos < 0 then
        redis.call('DEL', P .. 'q:seen:' .. ((e + 1) % 3) .. ':' .. c, tmp, tmp2)
        c, b = c + 1, -1
      else
        b = pos + 1
        budget = budget - 1
        -- Still idle? It may have asked since the map was made (slot e), or left.
        if redis.call('GETBIT', P .. 'q:seen:' .. slot .. ':' .. c, pos) == 0 and
            redis.call('GETBIT', hk, pos) == 1 then
          local m, score = find_by_n(c * CHUNK + pos)
          if m then
            local user, n, tok, pre = unwait(m, score)
            if pre then left_prequeue(n, now, pol) end
            ended(user, tok, now)
            idled = idled + 1
          else
            here(c * CHUNK + pos, 0)
          end
        end
      end
    end
  end
  if c > hi then c = -1 end
  redis.call('HSET', ep, 'pass', pass, 'c', c, 'b', b, 'lo', lo)
  return idled
end
local idled = sweep()

-- Forget ended tokens after a while (until then they read as EXPIRED).
local old = redis.call('ZRANGEBYSCORE', P .. 'q:gone', '-inf', now - tonumber(ARGV[7]), 'LIMIT', 0, 1000)
local forgotten = {}
for _, tok in ipairs(old) do
  redis.call('ZREM', P .. 'q:gone', tok)
  local u = redis.call('HGET', P .. 'q:tok', tok)
  if u then
    if redis.call('HGET', P .. 'q:users', u) == tok then redis.call('HDEL', P .. 'q:users', u) end
    forgotten[#forgotten + 1] = u
    forgotten[#forgotten + 1] = tok
  end
  redis.call('HDEL', P .. 'q:tok', tok)
  redis.call('HDEL', P .. 'q:since', tok)
end

-- ---- the admission rate (adaptive controller) ----
-- ADAPTIVE: every interval (the first tick of any server after it) the rate is
-- recomputed from the payment back end's health: halved (not below rate_min) while
-- payments of this concert wait too long, too many are unsettled, or too many booking
-- calls fail; otherwise raised by a tenth of the span (not above rate_max).
local function health()
  local pend = P .. 'pend'
  local target = tonumber(ARGV[12])
  local verdict = 0
  local oldest = redis.call('ZRANGE', pend, 0, 19, 'WITHSCORES')
  for i = 1, #oldest, 2 do
    local pid, at = oldest[i], tonumber(oldest[i + 1])
    local s = redis.call('HGET', P .. 'p:' .. pid, 'status')
    if s == 'PENDING' or (s == 'SUBMITTING' and now - at < 60000) then
      if now - at > target and verdict == 0 then verdict = 1 end
    else
      redis.call('ZREM', pend, pid) -- settled, abandoned or gone: not the back end's backlog
    end
  end
  if verdict == 0 and redis.call('ZCARD', pend) > tonumber(ARGV[13]) then verdict = 2 end
  local calls, errors = tonumber(ARGV[9]), tonumber(ARGV[10])
  if verdict == 0 and calls >= 20 and errors * 1000 > calls * tonumber(ARGV[14]) then verdict = 3 end
  return verdict
end

local rate, verdict = pol.rate, 0
local adm = redis.call('HMGET', P .. 'q:adm', 'eff', 'eff_at', 'health')
if pol.mode == 2 then
  local lo = pol.rmin
  local hi = pol.rmax > 0 and pol.rmax or math.max(pol.rate, lo)
  rate = tonumber(adm[1]) or pol.rate
  if rate < lo then rate = lo end
  if rate > hi then rate = hi end
  verdict = tonumber(adm[3]) or 0
  if now - (tonumber(adm[2]) or 0) >= tonumber(ARGV[11]) then
    verdict = health()
    if verdict ~= 0 then
      rate = math.max(lo, math.floor(rate / 2))
    else
      rate = math.min(hi, rate + math.max(1, math.ceil((hi - lo) / 10)))
    end
    redis.call('HSET', P .. 'q:adm', 'eff', rate, 'eff_at', now, 'health', verdict)
  elseif tonumber(adm[1]) ~= rate then
    redis.call('HSET', P .. 'q:adm', 'eff', rate)
  end
elseif tonumber(adm[1]) ~= rate then
  redis.call('HSET', P .. 'q:adm', 'eff', rate, 'health', 0)
end

-- ---- admission ----
local waiting = redis.call('ZCARD', P .. 'q:wait')
local active = redis.call('ZCARD', P .. 'q:active')
local admitted = 0
if sale_phase(now, pol) == 0 and waiting > 0 then
  local n
  local credit = 0
  if pol.method == 3 then
    n = waiting -- PASSTHROUGH: everyone, limits ignored
  else
    credit = bucket(now, rate)
    n = math.floor(credit)
    if pol.max_active >= 0 and n > pol.max_active - active then n = pol.max_active - active end
    if n > waiting then n = waiting end
  end
  if n > 1000 then n = 1000 end
  if n > 0 and pol.method == 2 then
    -- RANDOM: each admission picks uniformly among everyone still waiting, with
    -- numbers drawn from the server's CSPRNG bytes (SHA-1 stretched, 52 bits, with
    -- rejection so that no index is favoured).
    local left = waiting
    local draw = 0
    for _ = 1, n do
      local idx
      repeat
        draw = draw + 1
        local r = tonumber(string.sub(redis.sha1hex(ARGV[8] .. ':' .. draw), 1, 13), 16)
        local lim = math.floor(4503599627370496 / left) * left
        if r < lim then idx = r % left end
      until idx
      local pick = redis.call('ZRANGE', P .. 'q:wait', idx, idx, 'WITHSCORES')
      local user, _, tok = unwait(pick[1], pick[2])
      activate(user, tok, now, pol.ttl)
      admitted = admitted + 1
      left = left - 1
    end
  elseif n > 0 then
    local popped = redis.call('ZPOPMIN', P .. 'q:wait', n)
    for i = 1, #popped, 2 do
      local user, _, tok = unwaited(popped[i], popped[i + 1])
      activate(user, tok, now, pol.ttl)
      admitted = admitted + 1
    end
  end
  if pol.method ~= 3 then bucket_save(now, credit - admitted) end
end

local out = {admitted, waiting - admitted, active + admitted, #expired, idled,
  redis.call('ZCARD', P .. 'holds'), 1, now, rate, pol.idle, pol.method, pol.sale_at, verdict}
for _, v in ipairs(forgotten) do out[#out + 1] = v end
return out
