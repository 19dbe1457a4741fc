-- A stopping worker that listens for its idle peers hands listening on at once
-- (workers/broker/fetcher.py): KEYS[1] the leader key, KEYS[2] the wake list, ARGV[1]
-- the worker id. Another worker's leadership is left alone.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 0)
return 1
