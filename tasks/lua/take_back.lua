-- Take back one message whose lease lapsed (workers/broker/leases.py), re-checking its
-- score so that a renewal, an ack or another worker's sweep in between wins.
-- KEYS[1] unacked, KEYS[2] unacked_index (tasks/kombu_layout.py), KEYS[3] the list to
-- put the message back on. ARGV[1] delivery tag, ARGV[2] the newest score still
-- expired, ARGV[3] the message (with its new delivery tag).
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
