-- Store a batch's status records in one command (workers/serving/store.py): KEYS are
-- result keys, ARGV[1] the TTL, ARGV[2..] the records. Publishing lets waiting clients
-- see a result within a round trip (Celery's Redis backend publishes the same way).
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  redis.call('PUBLISH', KEYS[i], ARGV[i + 1])
end
return #KEYS
