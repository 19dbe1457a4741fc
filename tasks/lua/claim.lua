-- The in-flight claim of a job id (tasks/wire/control.py, Claim):
-- '<wire version>:<unix time>:<model:variant>', the time on Redis's clock (a bare '<unix time>', as inferq wrote it before claims had a
-- version, is read as version 1, so a rolling upgrade does not send jobs twice). A claim younger than ARGV[1] seconds holds the id.
-- An older one, or one in another wire version, *may* be stale (its producer died before
-- sending, or its message was lost), or its message may still wait in a deep queue or be
-- held by a live worker: claim() reports it, with its age, and leaves it alone;
-- producers/claims.py looks at the broker and takes it over only if nothing there could
-- still run the job (take_over.lua). ARGV[2] is the claim's TTL, ARGV[3] the wire
-- version, ARGV[4] the job's model:variant (so a status can look at its queue).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = ARGV[3] .. ':' .. string.format('%.6f', now) .. ':' .. ARGV[4]

local function claim_time(raw)
  if not raw then return nil end
  local v, at = string.match(raw, '^(%d+):([%d%.]+)')
  if not v then v, at = '1', string.match(raw, '^([%d%.]+)$') end
  if v ~= ARGV[3] then return nil end
  return tonumber(at)
end

-- Returns 0 (claimed now), 2 (held by a recent claim), or 3, the claim read and its age
-- in seconds ('-1': unknown, a claim in another form) for one that may be stale.
local function claim(key)
  if redis.call('SET', key, stamp, 'NX', 'EX', ARGV[2]) then return 0 end
  local raw = redis.call('GET', key)
  if not raw then  -- expired between the two calls
    redis.call('SET', key, stamp, 'EX', ARGV[2])
    return 0
  end
  local at = claim_time(raw)
  if at and now - at < tonumber(ARGV[1]) then return 2 end
  return 3, raw, at and string.format('%.6f', now - at) or '-1'
end
