-- wallet_audit: one user's wallet against one concert's payments (user slot).
-- KEYS: 1 bal, 2 pay, 3 refund. ARGV: 1 payment id prefix of the concert ("p1.<C>."),
-- then (pid, status, amount)* of this user's payments in that concert.
-- Returns the problems found (an empty array when none).
local prefix = ARGV[1]
local problems = {}
local function bad(s) problems[#problems + 1] = s end
local known = {}
for i = 2, #ARGV, 3 do known[ARGV[i]] = {ARGV[i + 1], ARGV[i + 2]} end
local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
if bal < 0 then bad(KEYS[1] .. ': negative balance ' .. bal) end
local debited, refunded = {}, {}
local d = redis.call('HGETALL', KEYS[2])
for i = 1, #d, 2 do debited[d[i]] = d[i + 1] end
local r = redis.call('HGETALL', KEYS[3])
for i = 1, #r, 2 do refunded[r[i]] = r[i + 1] end
for pid, amount in pairs(debited) do
  if string.sub(pid, 1, #prefix) == prefix then
    local k = known[pid]
    if not k then
      bad('debit ' .. pid .. ' has no payment')
    elseif k[2] ~= amount then
      bad('debit ' .. pid .. ' is ' .. amount .. ', the payment says ' .. k[2])
    elseif k[1] == 'COMPLETED' and refunded[pid] then
      bad('COMPLETED payment ' .. pid .. ' was refunded')
    elseif k[1] == 'FAILED' and not refunded[pid] then
      bad('FAILED payment ' .. pid .. ' was debited and not refunded')
    end
  end
end
for pid, amount in pairs(refunded) do
  if string.sub(pid, 1, #prefix) == prefix then
    if not debited[pid] then bad('refund ' .. pid .. ' without a debit') end
    if not known[pid] or known[pid][1] ~= 'FAILED' then bad('refund ' .. pid .. ' without a FAILED payment') end
  end
end
for pid, k in pairs(known) do
  if k[1] == 'COMPLETED' and not debited[pid] then bad('COMPLETED payment ' .. pid .. ' was never debited') end
end
return problems
