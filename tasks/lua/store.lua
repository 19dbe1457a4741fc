-- Store a batch's status records in one command (workers/serving/store.py). Needs
-- revoked.lua. ARGV[1] the TTL, ARGV[2] the records: one msgpack array (str form, the
-- one cmsgpack reads), record i for job i; ARGV[3] the job ids, one msgpack array;
-- ARGV[4] and ARGV[5] the prefixes of their result and in-flight keys. One argument,
-- not one per record or key: redis-py packs a command with a Python loop per argument,
-- ~1 us each on the worker. The keys are built here, so the script does not declare
-- them: fine on one Redis, not on a Redis Cluster (a batch's keys lie in many slots).
-- Publishing lets waiting clients see a result within a round trip (Celery's Redis
-- backend publishes the same way). The claim ends with its job: if the result is
-- evicted later, nothing says "queued" for a job that is not. A job cancelled meanwhile
-- keeps its cancelled record: one final state, and no result published after it.
-- Returns how many records were stored.
--
-- Reply channels (optional, after the prefixes): ARGV[6] the ReplyBatch version,
-- ARGV[7] a msgpack array: per job the number of its client's reply channel (0: none),
-- then ARGV[8..] the channels. Each record stored is also published under its own key
-- as before; besides, each channel gets ONE message for the batch: a ReplyBatch
-- (tasks/wire/results.py), msgpack {v, ids, records} of the records stored for that
-- client, in order.
local ttl = ARGV[1]
local records = cmsgpack.unpack(ARGV[2])
local ids = cmsgpack.unpack(ARGV[3])
local result_prefix, inflight_prefix = ARGV[4], ARGV[5]
local replies = #ARGV > 5
local numbers = nil
local batches, order = {}, {}
if replies then
  numbers = cmsgpack.unpack(ARGV[7])
end
local stored = 0
for i, id in ipairs(ids) do
  local key = result_prefix .. id
  if not is_revoked(redis.call('GETRANGE', key, 0, 63)) then
    redis.call('SET', key, records[i], 'EX', ttl)
    redis.call('PUBLISH', key, records[i])
    stored = stored + 1
    if replies then
      local c = numbers[i]
      if c > 0 then
        local b = batches[c]
        if not b then
          b = {ids = {}, records = {}}
          batches[c] = b
          order[#order + 1] = c
        end
        b.ids[#b.ids + 1] = id
        b.records[#b.records + 1] = records[i]
      end
    end
  end
  redis.call('DEL', inflight_prefix .. id)
end
for _, c in ipairs(order) do
  local b = batches[c]
  redis.call('PUBLISH', ARGV[7 + c],
    cmsgpack.pack({v = tonumber(ARGV[6]), ids = b.ids, records = b.records}))
end
return stored
