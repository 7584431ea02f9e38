-- bk_lib: booking helpers prepended to every booking script and to the payment scripts
-- (common/lua/pay_*.lua: a payment sells or releases a hold), not a script of its own.
-- Lives in common/ because both concert-server and payment-consumer load scripts that
-- need it; the booking module (server/srv_booking.c) owns the keys it touches.
-- P is the concert's key prefix "cc:{<concert>}:"; every key built from it shares the
-- concert's hash tag, so the whole script stays in one Redis Cluster slot.
-- Scripts answer {0, ...} on success or {grpc_code, message}.
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- The user of an ACTIVE token, or nil, code, message.
local function active_user(P, tok, now)
  local user = redis.call('HGET', P .. 'q:tok', tok)
  if not user then
    -- A waiting token is not in q:tok (the queue's layout, server/lua/queue_lib.lua):
    -- its member in q:wait is found by its join number and starts with its id.
    local n, hex = string.match(tok, '^v2%.[%w_-]+%.(%d+)%.(%x+)$')
    if n and #hex == 32 then
      local m = redis.call('ZRANGEBYSCORE', P .. 'q:wait', n, n, 'LIMIT', 0, 1)[1]
      if not m then
        local s = redis.call('HGET', P .. 'q:pre', n)
        if s then m = redis.call('ZRANGEBYSCORE', P .. 'q:wait', s, s, 'LIMIT', 0, 1)[1] end
      end
      local id = string.gsub(hex, '%x%x', function(h) return string.char(tonumber(h, 16)) end)
      if m and string.sub(m, 1, 16) == id then return nil, 7, 'token: not admitted yet (WAITING)' end
    end
    return nil, 16, 'token: unknown token'
  end
  local e = redis.call('ZSCORE', P .. 'q:active', tok)
  if e and tonumber(e) > now then return user end
  return nil, 7, 'token: not active (EXPIRED)'
end

-- Ends a HELD reservation with `status` (EXPIRED or CANCELLED): frees the seats it
-- still holds and its owner's count. Ended reservations are kept for a day.
local function release(P, rid, status)
  local r = P .. 'r:' .. rid
  local f = redis.call('HMGET', r, 'status', 'sched', 'seats', 'user', 'n')
  if f[1] ~= 'HELD' then return false end
  local skey = P .. 's:' .. f[2] .. ':seat'
  local mine = 'H|' .. rid .. '|'
  for s in string.gmatch(f[3], '[^,]+') do
    local v = redis.call('HGET', skey, s)
    if v and string.sub(v, 1, #mine) == mine then redis.call('HDEL', skey, s) end
  end
  local n = tonumber(f[5])
  redis.call('HINCRBY', P .. 's:' .. f[2] .. ':meta', 'held', -n)
  redis.call('HINCRBY', P .. 'uheld', f[4], -n)
  redis.call('ZREM', P .. 'holds', rid)
  redis.call('ZREM', P .. 'ures:' .. f[4], rid)
  redis.call('HSET', r, 'status', status)
  redis.call('PEXPIRE', r, 86400000)
  return true
end

-- A reservation as the reply tail: rid, sched, total, status, exp, created, seats...
local function resv_reply(P, rid, now)
  local r = P .. 'r:' .. rid
  local f = redis.call('HMGET', r, 'status', 'exp')
  if f[1] == 'HELD' and tonumber(f[2]) <= now then release(P, rid, 'EXPIRED') end
  local g = redis.call('HMGET', r, 'sched', 'total', 'status', 'exp', 'created', 'seats')
  local out = {0, rid, g[1], tonumber(g[2]), g[3], tonumber(g[4]), tonumber(g[5])}
  for s in string.gmatch(g[6], '[^,]+') do out[#out + 1] = tonumber(s) end
  return out
end
