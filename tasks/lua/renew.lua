-- Renew leases (workers/broker/leases.py): KEYS[1] unacked_index; ARGV the delivery
-- tags. Only tags still there (XX): an acked message stays acked. Redis's clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local args = {'XX'}
for i = 1, #ARGV do
  args[#args + 1] = now
  args[#args + 1] = ARGV[i]
end
return redis.call('ZADD', KEYS[1], unpack(args))
