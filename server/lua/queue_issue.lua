-- queue_issue: joins a concert's queue, idempotent per user (queue_lib prepended).
-- Only a concert an admin created has a queue: for any other id nothing is written.
-- KEYS: 1 q:wait (declares the slot)
-- ARGV: 1 P, 2 concert, 3..6 defaults (rate, max_active, active_ttl_ms, idle_timeout_ms),
--       7 user, 8 fresh token id (16 raw bytes), 9 its 32 hex digits,
--       pre-queue only (else ''): 10 the seed commitment the server drew with (hex),
--       11 the draw score of the fresh id, 12 SHA-256 of the fresh id (32 raw bytes),
--       13 a candidate seed (hex) to install if none is drawn yet
-- Returns {0, token, state (1 waiting, 2 active), position (0: pre-queue), expires_ms,
--          since_ms, rate, flags (1: this call made the token, 2: it was admitted now),
--          phase (queue_lib sale_phase), method, waiting}
--   or {-1} no such concert, {-4} queueing method REJECT, {-5, prequeue_at, sale_at}
--   before the pre-queue opens, {-2, seed, commitment} the server must draw with this
--   seed (or, both '', draw one), {-3} the fresh id ties another's draw: try another.
if redis.call('EXISTS', P .. 'concert') == 0 then return {-1} end
local now = now_ms()
local pol = policy({ARGV[3], ARGV[4], ARGV[5], ARGV[6]})
if pol.method == 4 then return {-4} end
local phase = sale_phase(now, pol)
if phase == 1 then return {-5, pol.pre_at, pol.sale_at} end
local rate = effective_rate(pol)
local user = ARGV[7]

local cur = redis.call('HGET', P .. 'q:users', user)
if cur then
  if string.sub(cur, 1, 3) ~= 'v2.' then
    -- Waiting: the same token and place.
    local m, score = find_by_n(cur)
    if m then
      local u, n = member_parts(m, score)
      if u == user then
        seen(n, now, pol.idle)
        local pos = phase == 2 and 0 or redis.call('ZRANK', P .. 'q:wait', m) + 1
        return {0, token_of(n, string.sub(m, 1, 16)), 1, pos, 0, 0, rate, 0, phase, pol.method,
          redis.call('ZCARD', P .. 'q:wait')}
      end
    end
  else
    local e = redis.call('ZSCORE', P .. 'q:active', cur)
    if e and tonumber(e) > now then
      return {0, cur, 2, 0, tonumber(e), tonumber(redis.call('HGET', P .. 'q:since', cur) or 0), rate, 0, 0,
        pol.method, 0}
    end
    -- The user's previous token has ended (left, expired, idled out, paid): it goes
    -- now, so a user who cycles join/leave keeps one ended token, not one per cycle.
    redis.call('HDEL', P .. 'q:tok', cur)
    redis.call('ZREM', P .. 'q:gone', cur)
    redis.call('ZREM', P .. 'q:active', cur)
    redis.call('HDEL', P .. 'q:since', cur)
  end
end

local id = ARGV[8]
if phase == 2 then
  -- The pre-queue: the place is the fresh id's draw, HMAC-SHA256(seed, SHA-256(id)),
  -- which the server computes with the concert's seed. The seed is drawn (the server
  -- offers one) the first time it is needed once the pre-queue is open.
  local sale = redis.call('HMGET', P .. 'q:sale', 'seed', 'commit')
  if not sale[2] then
    if ARGV[13] == '' or ARGV[10] == '' then return {-2, '', ''} end
    redis.call('HSET', P .. 'q:sale', 'seed', ARGV[13], 'commit', ARGV[10], 'drawn', now)
    sale = {ARGV[13], ARGV[10]}
  end
  if ARGV[10] ~= sale[2] then return {-2, sale[1], sale[2]} end
  local score = ARGV[11]
  if redis.call('ZCOUNT', P .. 'q:wait', score, score) > 0 then return {-3} end
  local n = redis.call('INCR', P .. 'q:seq')
  redis.call('ZADD', P .. 'q:wait', score, id .. '\1' .. string.format('%d', n) .. '\1' .. user)
  redis.call('HSET', P .. 'q:pre', n, score)
  redis.call('HSET', P .. 'q:users', user, n)
  here(n, 1)
  seen(n, now, pol.idle)
  redis.call('APPEND', P .. 'q:plog', ARGV[12] .. string.format('%016d', n))
  return {0, token_of(n, id), 1, 0, 0, 0, rate, 1, 2, pol.method, 0}
end

local n = redis.call('INCR', P .. 'q:seq')
local tok = token_of(n, id)
if pol.method == 3 then
  -- PASSTHROUGH: everyone ACTIVE at once, rate and max_active ignored.
  activate(user, tok, now, pol.ttl)
  return {0, tok, 2, 0, now + pol.ttl, now, rate, 3, 0, pol.method, 0}
end
local waiting = redis.call('ZCARD', P .. 'q:wait')
if waiting == 0 then
  -- Straight through when nobody waits, the bucket has credit and there is room:
  -- the same bucket as the admission ticks, so every server together keeps the rate.
  local credit = bucket(now, rate)
  if credit >= 1 and (pol.max_active < 0 or redis.call('ZCARD', P .. 'q:active') < pol.max_active) then
    bucket_save(now, credit - 1)
    activate(user, tok, now, pol.ttl)
    return {0, tok, 2, 0, now + pol.ttl, now, rate, 3, 0, pol.method, 0}
  end
end
redis.call('ZADD', P .. 'q:wait', n, id .. user)
redis.call('HSET', P .. 'q:users', user, n)
here(n, 1)
seen(n, now, pol.idle)
return {0, tok, 1, waiting + 1, 0, 0, rate, 1, 0, pol.method, waiting + 1}
