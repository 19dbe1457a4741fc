-- STARTED records for a batch (workers/serving/store.py): as store.lua (needs
-- revoked.lua), but not published, since only ready states wake waiters, and the
-- claim stays (the job is not over). A cancelled job's record is left alone.
local ttl = ARGV[1]
for i = 1, #KEYS do
  if not is_revoked(redis.call('GETRANGE', KEYS[i], 0, 63)) then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  end
end
return #KEYS
