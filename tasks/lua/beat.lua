-- A worker's heartbeat (workers/broker/leases.py), one call per beat: renew this worker's
-- alive key and its entry in the lease index, then, if it wins this interval's sweep turn,
-- find the messages of dead workers (tasks/liveness.py).
-- KEYS[1] this worker's alive key, KEYS[2] the lease index (worker id -> lease end),
-- KEYS[3] the sweep turn, KEYS[4] holders, KEYS[5] unacked_index.
-- ARGV[1] worker id, ARGV[2] lease (ms), ARGV[3] sweep interval (ms), ARGV[4] the
-- visibility timeout (s), ARGV[5] the alive-key prefix, ARGV[6] most tags to return.
-- Returns {lapsed, swept, expired, tag, holder, tag, holder, ...}: lapsed is 1 when this
-- worker's own alive key had expired before this beat (its messages may have been taken
-- back); swept is 1 when this call took the sweep turn; expired counts unacked_index
-- entries older than the visibility timeout (then the caller runs that slower sweep);
-- each tag is a message held by a worker whose alive key is gone.
-- A worker is dead when its lease ended on the index *and* its alive key is gone: the
-- key is the authority (its TTL is the lease), the index only says whom to look at, so
-- a sweep costs O(log workers) unless someone died.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease_ms = tonumber(ARGV[2])
local lapsed = redis.call('EXISTS', KEYS[1]) == 0 and 1 or 0
redis.call('SET', KEYS[1], '1', 'PX', lease_ms)
redis.call('ZADD', KEYS[2], string.format('%.6f', now + lease_ms / 1000), ARGV[1])
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[3]) then
  return {lapsed, 0, 0}
end
local expired = redis.call('ZCOUNT', KEYS[5], '-inf', string.format('%.6f', now - tonumber(ARGV[4])))
local out = {lapsed, 1, expired}
local dead, any = {}, false
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%.6f', now), 'LIMIT', 0, 100)) do
  if redis.call('EXISTS', ARGV[5] .. w) == 0 then
    dead[w] = true
    any = true
  end
end
if not any then return out end
local most = 3 + 2 * tonumber(ARGV[6])
local left = {}
local h = redis.call('HGETALL', KEYS[4])
for i = 1, #h, 2 do
  local tag, w = h[i], h[i + 1]
  if dead[w] then
    if not redis.call('ZSCORE', KEYS[5], tag) then
      redis.call('HDEL', KEYS[4], tag)  -- its message is gone (restored by kombu): a stale record
    else
      left[w] = true
      if #out < most then
        out[#out + 1] = tag
        out[#out + 1] = w
      end
    end
  end
end
-- A dead worker that holds nothing any more leaves the index.
for w in pairs(dead) do
  if not left[w] then redis.call('ZREM', KEYS[2], w) end
end
return out
