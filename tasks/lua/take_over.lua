-- Take over claims that nothing can still run (producers/claims.py): the caller read
-- each as possibly stale (check_and_claim.lua) and then found, on the broker, no queued
-- message and no unacknowledged one that could be its job. Needs claim.lua. Each id is
-- claimed afresh only if its in-flight key still holds the claim read then and no record
-- is stored (else someone stored a result or took the claim over meanwhile: share that).
-- KEYS[1] the cache-stats hash, then (result key, in-flight key) per job; ARGV[1..4] as
-- claim.lua, ARGV[5..] the claim each in-flight key held when it was read.
-- Returns 1 (claimed: send it) or 0 per job.
local out = {}
local claimed = 0
for i = 2, #KEYS, 2 do
  local won = false
  if redis.call('EXISTS', KEYS[i]) == 0 and redis.call('GET', KEYS[i + 1]) == ARGV[4 + i / 2] then
    redis.call('SET', KEYS[i + 1], stamp, 'EX', ARGV[2])
    won = true
    claimed = claimed + 1
  end
  out[#out + 1] = won and 1 or 0
end
if claimed > 0 then redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':miss', claimed) end
return out
