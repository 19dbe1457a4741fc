-- One round trip checks the cache and claims the ids of many jobs (producers/claims.py).
-- Needs claim.lua, status_record.lua and slices.lua. KEYS[1] is the cache-stats hash;
-- ARGV[1..3] as claim.lua, ARGV[4] model:variant, ARGV[5] the cacheable error types,
-- comma-separated, ARGV[6] the job ids (one msgpack array), ARGV[7] and ARGV[8] the
-- prefixes of their result and in-flight keys.
--
-- The ids come as one argument and the answer as one string of codes, not as two keys
-- and a reply array per job: redis-py packs and parses those with a Python loop per item
-- (about a fifth of a bulk client's CPU). The keys are built here, so this script does
-- not declare them: fine on one Redis, not on a Redis Cluster (nor is any multi-job
-- script: the jobs' keys lie in many slots).
--
-- Returns {codes, extras}: codes has one character per job, in order,
--   '1'  a status record is stored under this id (a result, a failure, a state); the
--        record is the next item of extras
--   '0'  nothing stored, and we claimed the id: enqueue it
--   '2'  nothing stored, but someone else queued it recently
--   '3'  nothing stored, and someone queued it longer ago than ARGV[1]: the next two
--        items of extras are the claim and its age; the caller decides
--        (producers/claims.py) whether it was lost
-- and counts cache hits and misses for the workers' /metrics.
local cacheable = cacheable_set(ARGV[5])
local version = tonumber(ARGV[3])
local ids = cmsgpack.unpack(ARGV[6])
local result_prefix, inflight_prefix = ARGV[7], ARGV[8]
local codes, extras = {}, {}
local hits, misses = 0, 0
-- The stored records in one MGET per slice of jobs, not a GET each (slices.lua).
local stored = mget_all(prefixed(result_prefix, ids))
for i, id in ipairs(ids) do
  local r = stored[i]
  if r then
    if status_cacheable(r, version, cacheable) then hits = hits + 1 end
    codes[i] = '1'
    extras[#extras + 1] = r
  else
    local code, raw, age = claim(inflight_prefix .. id)
    if code == 0 then misses = misses + 1 end
    codes[i] = tostring(code)
    if code == 3 then
      extras[#extras + 1] = raw
      extras[#extras + 1] = age
    end
  end
end
if hits > 0 then redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':hit', hits) end
if misses > 0 then redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':miss', misses) end
return {table.concat(codes), extras}
