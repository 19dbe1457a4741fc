-- Acknowledge delivered messages whose results are stored (workers/broker/fetcher.py):
-- kombu's unacked record and index entry, inferq's holder record, and any inputs that
-- travelled beside the messages, all at once (a worker killed mid-ack must not leave a
-- hash entry without its index entry: nothing would ever sweep it).
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] holders, KEYS[4..] input keys;
-- ARGV the delivery tags.
if #ARGV > 0 then
  redis.call('ZREM', KEYS[2], unpack(ARGV))
  redis.call('HDEL', KEYS[1], unpack(ARGV))
  redis.call('HDEL', KEYS[3], unpack(ARGV))
end
if #KEYS > 3 then
  redis.call('DEL', unpack(KEYS, 4))
end
return #ARGV
