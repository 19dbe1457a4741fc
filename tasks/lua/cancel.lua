-- Cancel a job that no worker has started (producers/client.py, Client.cancel). Needs
-- revoked.lua. KEYS[1] the result key, KEYS[2] the in-flight claim; ARGV[1] the
-- cancelled record, ARGV[2] its TTL. Returns:
--   'cancelled'  it was queued (claimed): now revoked, and workers will not run it
--   'already'    it was cancelled before
--   'running'    a worker has started it: nothing changed
--   'finished'   it has a result (or a failure): nothing changed
--   'unknown'    nothing is known of it: nothing changed
--   'shared'     (with KEYS[3], the job's owners set, and ARGV[3] the canceller) queued,
--                but other owners hold handles to it: nothing changed
-- The record is published like a result, so waiters wake with JobCancelled: under the
-- job's own key, and on 'inferq:cancelled' (tasks/constants.py, CANCEL_CHANNEL), which
-- every client's listener subscribes to beside its reply channel (a job a client sent
-- itself is awaited there, with no subscription of its own).
local cur = redis.call('GET', KEYS[1])
if cur then
  if is_revoked(cur) then return 'already' end
  if string.match(string.sub(cur, 1, 64), '^%s*{%s*"status"%s*:%s*"STARTED"') then return 'running' end
  return 'finished'
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 'unknown' end
if KEYS[3] then
  local n = redis.call('SCARD', KEYS[3])
  if n > 1 or (n == 1 and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 0) then return 'shared' end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
redis.call('PUBLISH', 'inferq:cancelled', ARGV[1])
redis.call('DEL', KEYS[2])
return 'cancelled'
