-- A stopping worker that listens for its idle peers hands listening on at once
-- (workers/broker/fetcher.py, fetch.lua): KEYS[1] the leader key, KEYS[2] the wake
-- list, KEYS[3] the sleepers; ARGV[1] the worker id. Another worker's leadership is
-- left alone; a sleeping worker that stops leaves the sleepers.
redis.call('ZREM', KEYS[3], ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] and cur ~= ARGV[1] .. ' busy' then return 0 end
redis.call('DEL', KEYS[1])
local t = redis.call('TIME')
if redis.call('ZCOUNT', KEYS[3], tonumber(t[1]), '+inf') > 0 and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('LPUSH', KEYS[2], '1')
end
return 1
