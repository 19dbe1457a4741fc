-- Store a batch's status records in one command (workers/serving/store.py). Needs
-- revoked.lua. KEYS: the result keys, then as many in-flight claim keys (the same jobs,
-- same order); ARGV[1] the TTL, ARGV[2..] the records. Publishing lets waiting clients
-- see a result within a round trip (Celery's Redis backend publishes the same way). The
-- claim ends with its job: if the result is evicted later, nothing says "queued" for a
-- job that is not. A job cancelled meanwhile keeps its cancelled record: one final
-- state, and no result published after it. Returns how many records were stored.
local ttl = ARGV[1]
local n = #KEYS / 2
local stored = 0
for i = 1, n do
  if not is_revoked(redis.call('GETRANGE', KEYS[i], 0, 63)) then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
    redis.call('PUBLISH', KEYS[i], ARGV[i + 1])
    stored = stored + 1
  end
  redis.call('DEL', KEYS[n + i])
end
return stored
