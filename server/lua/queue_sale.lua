-- queue_sale: a scheduled sale's proof and order (queue_lib prepended).
-- q:sale  hash   seed (hex, secret until the sale opens), commit (hex SHA-256 of the
--                seed), drawn (ms): drawn once the pre-queue is open, by the first
--                join, proof request or tick that needs it (the server offers a seed
--                from its CSPRNG; the first offer wins)
-- q:plog  string one 48-byte record per pre-queue join: SHA-256 of the token id (32
--                raw bytes) then n (16 decimal digits)
-- q:pleft bitmap n -> 1 for pre-queued users who left (or idled out) before the sale
--                opened: not part of the draw
-- KEYS: 1 q:wait (declares the slot)
-- ARGV: 1 P, 2 concert, 3 mode:
--   'proof', 4 candidate seed (hex), 5 its commitment (hex):
--     {0, commitment, seed (only once open), prequeued (once open), sale_at, prequeue_at,
--      now} or {-1} no such concert, {-9} no scheduled sale
--   'log', 4 offset, 5 bytes: {0, sale_at, now, seed, plog bytes from offset, total
--     length} (only once the sale has opened: else {-8, sale_at}); 'left', 4 offset, 5
--     bytes: {0, pleft bytes from offset, total length}
if redis.call('EXISTS', P .. 'concert') == 0 then return {-1} end
local now = now_ms()
local p = redis.call('HMGET', P .. 'policy', 'prequeue_at', 'sale_at')
local pre_at, sale_at = tonumber(p[1] or 0), tonumber(p[2] or 0)
local mode = ARGV[3]
if mode == 'left' then
  local off = tonumber(ARGV[4])
  return {0, redis.call('GETRANGE', P .. 'q:pleft', off, off + tonumber(ARGV[5]) - 1),
    redis.call('STRLEN', P .. 'q:pleft')}
end
if sale_at <= 0 then return {-9} end
local s = redis.call('HMGET', P .. 'q:sale', 'seed', 'commit')
if mode == 'log' then
  if now < sale_at or not s[1] then return {-8, sale_at} end
  local off = tonumber(ARGV[4])
  return {0, sale_at, now, s[1], redis.call('GETRANGE', P .. 'q:plog', off, off + tonumber(ARGV[5]) - 1),
    redis.call('STRLEN', P .. 'q:plog')}
end
if not s[2] and pre_at > 0 and now >= pre_at and now < sale_at and ARGV[4] ~= '' then
  redis.call('HSET', P .. 'q:sale', 'seed', ARGV[4], 'commit', ARGV[5], 'drawn', now)
  s = {ARGV[4], ARGV[5]}
end
local open = now >= sale_at
local prequeued = 0
if open then
  prequeued = redis.call('STRLEN', P .. 'q:plog') / 48 - redis.call('BITCOUNT', P .. 'q:pleft')
end
return {0, s[2] or '', open and (s[1] or '') or '', prequeued, sale_at, pre_at, now}
