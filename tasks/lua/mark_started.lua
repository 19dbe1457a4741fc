-- STARTED records for a batch (workers/serving/store.py): as store.lua, but not
-- published, since only ready states wake waiters.
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS
