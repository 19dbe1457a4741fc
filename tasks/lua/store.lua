-- Store a batch's status records in one command (workers/serving/store.py). Needs
-- revoked.lua. KEYS: the result keys, then as many in-flight claim keys (the same jobs,
-- same order); ARGV[1] the TTL, ARGV[2] the records: one msgpack array (str form, the
-- one cmsgpack reads), record i for job i. One argument, not one per record: redis-py
-- packs a command with a Python loop per argument, ~1 us each on the worker.
-- Publishing lets waiting clients see a result within a round trip (Celery's Redis
-- backend publishes the same way). The claim ends with its job: if the result is
-- evicted later, nothing says "queued" for a job that is not. A job cancelled meanwhile
-- keeps its cancelled record: one final state, and no result published after it.
-- Returns how many records were stored.
--
-- Reply channels (optional, after the records): ARGV[3] the length of the result keys'
-- prefix (what is left is the job id), ARGV[4] the ReplyBatch version, ARGV[5] a
-- msgpack array: per job the number of its client's reply channel (0: none), then
-- ARGV[6..] the channels. Each record stored is also published under its own key as
-- before; besides, each channel gets ONE message for the batch: a ReplyBatch
-- (tasks/wire/results.py), msgpack {v, ids, records} of the records stored for that
-- client, in order.
local ttl = ARGV[1]
local n = #KEYS / 2
local records = cmsgpack.unpack(ARGV[2])
local replies = #ARGV > 2
local plen, numbers = 0, nil
local batches, order = {}, {}
if replies then
  plen = tonumber(ARGV[3])
  numbers = cmsgpack.unpack(ARGV[5])
end
local stored = 0
for i = 1, n do
  if not is_revoked(redis.call('GETRANGE', KEYS[i], 0, 63)) then
    redis.call('SET', KEYS[i], records[i], 'EX', ttl)
    redis.call('PUBLISH', KEYS[i], records[i])
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
        b.ids[#b.ids + 1] = string.sub(KEYS[i], plen + 1)
        b.records[#b.records + 1] = records[i]
      end
    end
  end
  redis.call('DEL', KEYS[n + i])
end
for _, c in ipairs(order) do
  local b = batches[c]
  redis.call('PUBLISH', ARGV[5 + c],
    cmsgpack.pack({v = tonumber(ARGV[4]), ids = b.ids, records = b.records}))
end
return stored
