-- queue_lib: helpers prepended to every queue script (not a script of its own).
-- Every queue script gets ARGV[1] = P, the concert's key prefix "cc:{<concert>}:", and
-- ARGV[2] = the concert id; every key it touches is built from P, so the whole script
-- stays in the concert's Redis Cluster slot (KEYS[1], P .. 'q:wait', declares it).
--
-- The layout (docs/DATA.md "Queue"): a waiting user is ONE sorted-set member and ONE
-- hash field, nothing keyed by the token:
--   q:wait   zset  member = token id (16 raw bytes) .. user, score = join number n
--                  (pre-queued users of a scheduled sale: member = id .. "\1" .. n ..
--                  "\1" .. user, score = their draw, negative, so they come first)
--   q:users  hash  user -> n while waiting; -> the token string once ACTIVE or ended
--   q:pre    hash  n -> draw score, pre-queued users only (their lookup by n)
--   q:here:<c>, q:seen:<slot>:<c>  bitmaps of join numbers (chunks of 65536): who is
--                  waiting, who asked during each of the last three idle epochs
-- A token "v2.<concert>.<n>.<hex id>" finds its member by score n (or q:pre), and
-- the member's first 16 bytes prove the token. ACTIVE and ended tokens keep the
-- token-keyed layout the booking and payment scripts read (q:tok, q:active, q:gone).

local P, C = ARGV[1], ARGV[2]
local CHUNK = 65536

local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

local function hex16(id)
  return string.format('%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(id, 1, 16))
end

local function token_of(n, id)
  return 'v2.' .. C .. '.' .. string.format('%d', n) .. '.' .. hex16(id)
end

-- The concert's policy; d = the server's defaults {rate, max_active, ttl, idle}.
local function policy(d)
  local p = redis.call('HMGET', P .. 'policy', 'rate', 'max_active', 'active_ttl_ms', 'idle_timeout_ms', 'method',
    'prequeue_at', 'sale_at', 'mode', 'rate_min', 'rate_max')
  return {
    rate = tonumber(p[1] or d[1]), max_active = tonumber(p[2] or d[2]), ttl = tonumber(p[3] or d[3]),
    idle = tonumber(p[4] or d[4]), method = tonumber(p[5] or 0), pre_at = tonumber(p[6] or 0),
    sale_at = tonumber(p[7] or 0), mode = tonumber(p[8] or 0), rmin = tonumber(p[9] or 1),
    rmax = tonumber(p[10] or 0),
  }
end

-- 0: no scheduled sale, or it has opened; 1: not open yet, no pre-queue either;
-- 2: the pre-queue is open.
local function sale_phase(now, pol)
  if pol.sale_at <= 0 or now >= pol.sale_at then return 0 end
  if pol.pre_at > 0 and now >= pol.pre_at then return 2 end
  return 1
end

-- The admission rate now: admit_rate (FIXED) or the controller's (ADAPTIVE, kept in
-- q:adm 'eff' by queue_admit, within [rate_min, rate_max]).
local function effective_rate(pol)
  if pol.mode ~= 2 then return pol.rate end
  local e = tonumber(redis.call('HGET', P .. 'q:adm', 'eff'))
  local hi = pol.rmax > 0 and pol.rmax or math.max(pol.rate, pol.rmin)
  if not e then e = pol.rate end
  if e < pol.rmin then e = pol.rmin end
  if e > hi then e = hi end
  return e
end

-- Token bucket in q:adm (last: Redis ms, credit): credit accrues at `rate` per second,
-- capped at half a second of admissions (at least one). A new bucket starts full, so
-- the first users of an idle concert go straight through.
local function bucket(now, rate)
  if rate <= 0 then return 0 end
  local st = redis.call('HMGET', P .. 'q:adm', 'last', 'credit')
  local cap = math.max(1, rate / 2)
  local credit = cap
  if st[1] then
    credit = tonumber(st[2]) or 0
    local last = tonumber(st[1])
    if now > last then credit = credit + (now - last) * rate / 1000 end
  end
  if credit > cap then credit = cap end
  return credit
end

local function bucket_save(now, credit)
  redis.call('HSET', P .. 'q:adm', 'last', now, 'credit', tostring(credit))
end

-- ---- idle tracking: bitmaps of join numbers ----
-- Epochs of L = ceil(idle / 2) ms; a poll sets the user's bit in slot (epoch mod 3).
-- queue_admit drops a waiting user whose bit is in none of the three slots, so a
-- dropped user was silent for at least 2L >= idle (and at most about 3L).

local function epoch_len(idle)
  return math.ceil(idle / 2)
end

local function seen(n, now, idle)
  if idle <= 0 or n <= 0 then return end
  local slot = math.floor(now / epoch_len(idle)) % 3
  local k = P .. 'q:seen:' .. slot .. ':' .. math.floor(n / CHUNK)
  local b = n % CHUNK
  if redis.call('GETBIT', k, b) == 0 then redis.call('SETBIT', k, b, 1) end
end

local function here(n, v)
  redis.call('SETBIT', P .. 'q:here:' .. math.floor(n / CHUNK), n % CHUNK, v)
end

-- ---- members ----

-- A member's user, join number and whether it is pre-queued.
local function member_parts(m, score)
  if string.byte(m, 17) == 1 then
    local n, user = string.match(m, '^\1(%d+)\1(.*)$', 17)
    return user, tonumber(n), true
  end
  return string.sub(m, 17), tonumber(score), false
end

-- The waiting member with join number n (string) and its score, or nil.
local function find_by_n(n)
  local r = redis.call('ZRANGEBYSCORE', P .. 'q:wait', n, n, 'WITHSCORES', 'LIMIT', 0, 1)
  if r[1] then return r[1], r[2] end
  local s = redis.call('HGET', P .. 'q:pre', n)
  if not s then return nil end
  r = redis.call('ZRANGEBYSCORE', P .. 'q:wait', s, s, 'WITHSCORES', 'LIMIT', 0, 1)
  if r[1] then return r[1], r[2] end
  return nil
end

-- The waiting member of token (n, id), or nil.
local function find_waiting(n, id)
  if tonumber(n) <= 0 then return nil end
  local m, score = find_by_n(n)
  if m and string.sub(m, 1, 16) == id then return m, score end
  return nil
end

-- A member taken out of the line (ZREM or ZPOPMIN done): its lookup and bits go.
-- Returns its user, n, token and whether it was pre-queued.
local function unwaited(m, score)
  local user, n, pre = member_parts(m, score)
  if pre then redis.call('HDEL', P .. 'q:pre', n) end
  here(n, 0)
  return user, n, token_of(n, string.sub(m, 1, 16)), pre
end

local function unwait(m, score)
  redis.call('ZREM', P .. 'q:wait', m)
  return unwaited(m, score)
end

-- A token becomes ACTIVE until now + ttl.
local function activate(user, tok, now, ttl)
  redis.call('ZADD', P .. 'q:active', now + ttl, tok)
  redis.call('HSET', P .. 'q:tok', tok, user)
  redis.call('HSET', P .. 'q:users', user, tok)
  redis.call('HSET', P .. 'q:since', tok, now)
end

-- A waiting token ended (left, idled out): it reads EXPIRED for an hour, and `users`
-- points at it so that the user's next join removes it (one ended token per user).
local function ended(user, tok, now)
  redis.call('HSET', P .. 'q:tok', tok, user)
  redis.call('HSET', P .. 'q:users', user, tok)
  redis.call('ZADD', P .. 'q:gone', now, tok)
end

-- A pre-queued user left before the sale opened: not part of the draw.
local function left_prequeue(n, now, pol)
  if pol.sale_at > 0 and now < pol.sale_at then redis.call('SETBIT', P .. 'q:pleft', n, 1) end
end
