-- Store a batch's status records in one command (workers/serving/store.py). Needs
-- revoked.lua and slices.lua. ARGV[1] the TTL, ARGV[2] the records: one msgpack array
-- (str form, the one cmsgpack reads), record i for job i; ARGV[3] the job ids, one
-- msgpack array;
-- ARGV[4] and ARGV[5] the prefixes of their result and in-flight keys. One argument,
-- not one per record or key: redis-py packs a command with a Python loop per argument,
-- ~1 us each on the worker. The keys are built here, so the script does not declare
-- them: fine on one Redis, not on a Redis Cluster (a batch's keys lie in many slots).
-- Publishing lets waiting clients see a result within a round trip (Celery's Redis
-- backend publishes the same way). (Publishing only where PUBSUB NUMSUB saw a
-- subscriber was tried: any pattern subscription, which a Celery worker's remote
-- control holds on a shared Redis, would have made every publish needed again, and
-- Redis cannot say which patterns match.) The claim ends with its job: if the result is
-- evicted later, nothing says "queued" for a job that is not. A job cancelled meanwhile
-- keeps its cancelled record: one final state, and no result published after it.
-- Returns how many records were stored.
--
-- Reply channels (optional, after the prefixes): ARGV[6] the form, ARGV[7] a msgpack
-- array: per job the number of its client's reply channel (0: none). Each record stored
-- is also published under its own key as before; besides, each channel gets ONE message
-- for the batch (tasks/wire/replies.py, ReplyBatch):
--   form 1: ARGV[8..] the channels; each gets msgpack {v = 1, ids, records} of the
--           records stored for that client, in order;
--   form 2: ARGV[8..] pairs (channel, columns): the columns (a version 2 ReplyBatch the
--           worker packed) are published as they are, unread here; a channel whose
--           columns are empty (its client reads version 1 only), or one of whose jobs
--           kept its cancelled record, gets the version 1 message instead.
local ttl = ARGV[1]
local records = cmsgpack.unpack(ARGV[2])
local ids = cmsgpack.unpack(ARGV[3])
local result_prefix, inflight_prefix = ARGV[4], ARGV[5]
local replies = #ARGV > 5
local columns = replies and ARGV[6] == '2'
local numbers = nil
local batches, order = {}, {}
local kept = {}  -- form 2: per channel, true if one of its jobs kept a cancelled record
if replies then
  numbers = cmsgpack.unpack(ARGV[7])
end

local function add(c, id, record)
  local b = batches[c]
  if not b then
    b = {ids = {}, records = {}}
    batches[c] = b
    order[#order + 1] = c
  end
  b.ids[#b.ids + 1] = id
  b.records[#b.records + 1] = record
end

-- Channel c's name: form 1 lists the channels, form 2 pairs each with its columns.
local function channel(c)
  if columns then return ARGV[6 + 2 * c] end
  return ARGV[7 + c]
end

-- Per job its SET and PUBLISH; the reads and the deletes take one command per slice of
-- jobs (slices.lua). MGET reads whole values, not the first bytes is_revoked looks at,
-- but a job's key is nearly always empty here (or holds a cancel's or a STARTED record,
-- both small, or rarely the result of an earlier run).
local keys = prefixed(result_prefix, ids)
local current = mget_all(keys)
del_all(prefixed(inflight_prefix, ids))

local stored = 0
local skipped = {}
for i, id in ipairs(ids) do
  if not is_revoked(current[i]) then
    redis.call('SET', keys[i], records[i], 'EX', ttl)
    redis.call('PUBLISH', keys[i], records[i])
    stored = stored + 1
    if replies and not columns and numbers[i] > 0 then
      add(numbers[i], id, records[i])
    end
  else
    skipped[i] = true
    if columns and numbers[i] > 0 then kept[numbers[i]] = true end
  end
end
if columns then
  -- Channels that cannot take their columns get version 1, built here (rare: a client
  -- from before version 2, or a job cancelled while it ran).
  local fallback = {}
  for c = 1, (#ARGV - 7) / 2 do
    local blob = ARGV[7 + 2 * c]
    if blob ~= '' and not kept[c] then
      redis.call('PUBLISH', channel(c), blob)
    else
      fallback[c] = true
    end
  end
  if next(fallback) then
    for i, id in ipairs(ids) do
      local c = numbers[i]
      if fallback[c] and not skipped[i] then add(c, id, records[i]) end
    end
  end
end
for _, c in ipairs(order) do  -- version 1 messages, of either form
  local b = batches[c]
  redis.call('PUBLISH', channel(c), cmsgpack.pack({v = 1, ids = b.ids, records = b.records}))
end
return stored
