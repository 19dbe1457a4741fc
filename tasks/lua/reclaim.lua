-- Redo failures of the moment, atomically per id (producers/claims.py). Needs claim.lua.
-- KEYS[1] the cache-stats hash, then (result key, in-flight key) per job; ARGV[1..3] as
-- claim.lua, ARGV[4] model:variant, ARGV[5..] the record each result key held when it
-- was read. The old failure is deleted first, or a waiter would read it as this run's
-- result; if the key holds something else by now (another producer's redo stored a
-- result), it is left alone and the id not claimed. Returns 1 (claimed: send it) or 0
-- per job.
local out = {}
local claimed = 0
for i = 2, #KEYS, 2 do
  local cur = redis.call('GET', KEYS[i])
  local won = false
  if cur == ARGV[4 + i / 2] then
    redis.call('DEL', KEYS[i])
    redis.call('SET', KEYS[i + 1], stamp, 'EX', ARGV[2])
    won = true
  elseif not cur then
    -- A claim that may be stale is shared here, not taken over: the next submit of the
    -- input looks at the broker first (check_and_claim.lua, producers/claims.py).
    won = claim(KEYS[i + 1]) == 0
  end
  if won then claimed = claimed + 1 end
  out[#out + 1] = won and 1 or 0
end
if claimed > 0 then redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':miss', claimed) end
return out
