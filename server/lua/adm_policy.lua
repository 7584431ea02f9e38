-- adm_policy: sets (ARGV pairs) and reads a concert's policy, atomically: the checks
-- that need the stored policy or Redis' clock are made here, before anything is
-- written, so a refused change changes nothing.
-- KEYS: 1 concert hash, 2 policy hash. ARGV: field, value, ... (hash field names:
-- rate, max_active, active_ttl_ms, idle_timeout_ms, hold_ttl_ms, max_seats_per_user,
-- method, prequeue_at, sale_at, mode, rate_min, rate_max)
-- Returns {0, field, value, ...} (only the fields set for this concert) or {code, message}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {5, 'concert_id: no such concert'} end
if #ARGV > 0 then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local cur = {}
  local names = {'sale_at', 'prequeue_at', 'mode', 'rate_min', 'rate_max'}
  local got = redis.call('HMGET', KEYS[2], unpack(names))
  for i, k in ipairs(names) do cur[k] = tonumber(got[i] or 0) end
  local new = {}
  for k, v in pairs(cur) do new[k] = v end
  for i = 1, #ARGV, 2 do
    if new[ARGV[i]] ~= nil then new[ARGV[i]] = tonumber(ARGV[i + 1]) end
  end
  -- The scheduled sale.
  local sale_changed = new.sale_at ~= cur.sale_at or new.prequeue_at ~= cur.prequeue_at
  if sale_changed then
    if new.sale_at == 0 and new.prequeue_at ~= 0 then
      return {3, 'policy.prequeue_opens_at_unix_ms: a pre-queue needs sale_opens_at_unix_ms'}
    end
    if new.sale_at > 0 and new.prequeue_at > new.sale_at then
      return {3, 'policy.prequeue_opens_at_unix_ms: must not be after sale_opens_at_unix_ms (' .. new.sale_at .. ')'}
    end
    if cur.sale_at > 0 and now >= cur.sale_at then
      return {9, 'policy.sale_opens_at_unix_ms: the sale opened at ' .. cur.sale_at .. ' ms; an opened sale stays as it was'}
    end
    local pre_open = cur.sale_at > 0 and cur.prequeue_at > 0 and now >= cur.prequeue_at
    if pre_open then
      if new.prequeue_at ~= cur.prequeue_at then
        return {9, 'policy.prequeue_opens_at_unix_ms: the pre-queue opened at ' .. cur.prequeue_at ..
          ' ms; it cannot change'}
      end
      if new.sale_at == 0 then
        return {9, 'policy.sale_opens_at_unix_ms: users wait in the pre-queue; move the sale, do not cancel it'}
      end
    end
    if new.sale_at ~= cur.sale_at and new.sale_at > 0 and new.sale_at <= now then
      return {3, 'policy.sale_opens_at_unix_ms: must be in the future (Redis time now ' .. now .. ' ms)'}
    end
    if new.sale_at > now + 366 * 86400000 then
      return {3, 'policy.sale_opens_at_unix_ms: at most a year ahead'}
    end
    if new.prequeue_at ~= cur.prequeue_at and new.prequeue_at > 0 and new.prequeue_at <= now then
      return {3, 'policy.prequeue_opens_at_unix_ms: must be in the future (Redis time now ' .. now .. ' ms)'}
    end
    if not pre_open then
      -- Nobody is pre-queued yet: the next pre-queue draws a fresh seed.
      local P = string.sub(KEYS[2], 1, #KEYS[2] - #'policy')
      redis.call('DEL', P .. 'q:sale', P .. 'q:plog', P .. 'q:pleft')
    end
  end
  -- Adaptive admission bounds.
  if new.mode == 2 or new.rate_min ~= cur.rate_min or new.rate_max ~= cur.rate_max then
    if new.mode == 2 and new.rate_max == 0 then
      return {3, 'policy.admit_rate_max: ADMISSION_MODE_ADAPTIVE needs admit_rate_min and admit_rate_max'}
    end
    if new.mode == 2 and new.rate_min == 0 then
      return {3, 'policy.admit_rate_min: ADMISSION_MODE_ADAPTIVE needs admit_rate_min and admit_rate_max'}
    end
    if new.rate_max > 0 and new.rate_min > new.rate_max then
      return {3, 'policy.admit_rate_min: must not exceed admit_rate_max (' .. new.rate_min .. ' > ' .. new.rate_max .. ')'}
    end
  end
  redis.call('HSET', KEYS[2], unpack(ARGV))
end
local out = {0}
for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do out[#out + 1] = v end
return out
