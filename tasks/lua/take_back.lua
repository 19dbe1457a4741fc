-- Take back one message whose worker is gone (workers/broker/leases.py), re-checking, so
-- that an ack, a renewal, the holder coming back, or another worker's sweep in between
-- wins: the message is put back once, and never while its holder lives.
-- Two rules, either suffices:
--   the lease rule: ARGV[4] names the holder read by the sweep; the message is still
--   recorded as that worker's and the worker's alive key is gone (it died, or it has
--   not renewed its lease for longer than the lease: tasks/liveness.py);
--   the visibility-timeout rule: the message's score is still at most ARGV[2] (nobody
--   renewed it for the whole visibility timeout; 0 turns this rule off).
-- KEYS[1] unacked, KEYS[2] unacked_index (tasks/kombu_layout.py), KEYS[3] the list to
-- put the message back on, KEYS[4] holders. ARGV[1] delivery tag, ARGV[2] the newest
-- score still expired, ARGV[3] the message (with its new delivery tag), ARGV[4] the dead
-- holder ('' for none), ARGV[5] the alive-key prefix.
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then return 0 end
local gone = tonumber(score) <= tonumber(ARGV[2])
if not gone and ARGV[4] ~= '' then
  gone = redis.call('HGET', KEYS[4], ARGV[1]) == ARGV[4] and redis.call('EXISTS', ARGV[5] .. ARGV[4]) == 0
end
if not gone then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
