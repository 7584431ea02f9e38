-- wallet_charge: adds to a balance once per idempotency key.
-- KEYS: 1 balance (string), 2 charges (hash key -> "amount|balance_after")
-- ARGV: 1 amount, 2 idempotency key, 3 maximum balance
-- Returns {0, balance_after, replayed(0/1)} or {9, message}.
local prev = redis.call('HGET', KEYS[2], ARGV[2])
if prev then
  local amount, after = string.match(prev, '^(%d+)|(%d+)$')
  if amount ~= ARGV[1] then
    return {9, 'idempotency_key: already used for a charge of ' .. amount}
  end
  return {0, tonumber(after), 1}
end
local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if bal + amount > tonumber(ARGV[3]) then
  return {9, 'amount: the balance would exceed ' .. ARGV[3]}
end
local after = redis.call('INCRBY', KEYS[1], amount)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1] .. '|' .. after)
return {0, after, 0}
