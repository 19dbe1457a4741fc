-- One round trip checks the cache and claims the ids of many jobs (producers/claims.py).
-- Needs claim.lua and status_record.lua. KEYS[1] is the cache-stats hash, then
-- (result key, in-flight key) per job; ARGV[1..3] as claim.lua, ARGV[4] model:variant,
-- ARGV[5] the cacheable error types, comma-separated. Per job it returns
--   {1, record}  a status record is stored under this id (a result, a failure, a state)
--   {0}          nothing stored, and we claimed the id: enqueue it
--   {2}          nothing stored, but someone else queued it recently
--   {3, claim, age}  nothing stored, and someone queued it longer ago than ARGV[1]:
--                the caller decides (producers/claims.py) whether it was lost
-- and counts cache hits and misses for the workers' /metrics.
local cacheable = cacheable_set(ARGV[5])
local version = tonumber(ARGV[3])
local out = {}
local hits, misses = 0, 0
for i = 2, #KEYS, 2 do
  local r = redis.call('GET', KEYS[i])
  if r then
    if status_cacheable(r, version, cacheable) then hits = hits + 1 end
    out[#out + 1] = {1, r}
  else
    local code, raw, age = claim(KEYS[i + 1])
    if code == 0 then misses = misses + 1 end
    out[#out + 1] = code == 3 and {3, raw, age} or {code}
  end
end
if hits > 0 then redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':hit', hits) end
if misses > 0 then redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':miss', misses) end
return out
