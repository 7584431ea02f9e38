-- queue_user: the concerts one user waits in (or is ACTIVE in), for the cap on how
-- many at once. A record, not the truth: the queues' own keys say whether a token
-- still lives, and the server checks them before refusing. Entries go when the user
-- leaves, and when the queue forgets an ended token (an hour after it ended).
-- Records live in 65536 bucket hashes, cc:{uq:<b>}:users (b from the user id, see
-- srv_queue.c), field user -> value: one entry per concert, each the 16 raw bytes of
-- the token id, the join number n, '.', the concert id and a NUL. Small hashes are kept
-- by Redis as listpacks (a few dozen bytes per user instead of a key of its own: the
-- per-user cost of a waiting user, docs/PERFORMANCE.md "deep-queue"). No TTL: under
-- memory pressure nothing of a user's may be evicted.
-- KEYS: 1 the user's bucket
-- ARGV: 1 mode, 2 user
--   'add', 3 concert, 4 n, 5 token id (16 raw bytes), 6 cap, 7.. (concert, n) pairs
--     found dead, removed first: records the entry and answers {0} if the concert is
--     recorded already (its entry is replaced) or fewer than cap are; else
--     {1, concert, token, ...} (the record, nothing added)
--   'del', 3 concert, 4 n: forgets that entry if it is still the one recorded; {0}
local user = ARGV[2]
local function parse(v)
  local out, pos = {}, 1
  while v and pos <= #v do
    local z = string.find(v, '\0', pos + 16, true)
    if not z then break end
    local id, rest = string.sub(v, pos, pos + 15), string.sub(v, pos + 16, z - 1)
    local n, c = string.match(rest, '^(%d+)%.(.+)$')
    if n then out[#out + 1] = {c = c, n = n, id = id} end
    pos = z + 1
  end
  return out
end
local function save(list)
  if #list == 0 then
    redis.call('HDEL', KEYS[1], user)
    return
  end
  local parts = {}
  for i, e in ipairs(list) do parts[i] = e.id .. e.n .. '.' .. e.c .. '\0' end
  redis.call('HSET', KEYS[1], user, table.concat(parts))
end
local list = parse(redis.call('HGET', KEYS[1], user))
local mode = ARGV[1]
local function drop(c, n)
  for i, e in ipairs(list) do
    if e.c == c and e.n == n then
      table.remove(list, i)
      return true
    end
  end
  return false
end
if mode == 'del' then
  if drop(ARGV[3], ARGV[4]) then save(list) end
  return {0}
end
local changed = false
for i = 7, #ARGV - 1, 2 do
  if drop(ARGV[i], ARGV[i + 1]) then changed = true end
end
for _, e in ipairs(list) do
  if e.c == ARGV[3] then
    e.n, e.id = ARGV[4], ARGV[5]
    save(list)
    return {0}
  end
end
if #list < tonumber(ARGV[6]) then
  list[#list + 1] = {c = ARGV[3], n = ARGV[4], id = ARGV[5]}
  save(list)
  return {0}
end
if changed then save(list) end
local out = {1}
for _, e in ipairs(list) do
  out[#out + 1] = e.c
  out[#out + 1] = 'v2.' .. e.c .. '.' .. e.n .. '.' ..
    string.format('%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x', string.byte(e.id, 1, 16))
end
return out
