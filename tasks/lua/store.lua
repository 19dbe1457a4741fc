-- Store a batch's status records in one command (workers/serving/store.py). Needs
-- revoked.lua and slices.lua. ARGV[1] the TTL, ARGV[2] the job ids, one msgpack array;
-- ARGV[3] and ARGV[4] the prefixes of their result and in-flight keys; then one
-- argument per record, record i for job i (ARGV[4 + i]).
-- The ids as one argument, not one key each: redis-py packed a command with a Python
-- loop per argument (hiredis packs them in C now; ids stay one argument all the same).
-- The records one argument each, not one msgpack array: Redis's Lua hashes every byte
-- of every string it makes (redis/redis#9449: ~1.1 ns a byte here,
-- benchmarks/lua_costs.py), and an array made each record's bytes twice, as the
-- argument and again unpacked. The keys are built here, so the script does not declare
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
-- Reply channels (optional, after the records; B = 4 + the number of jobs): ARGV[B + 1]
-- the form, ARGV[B + 2] a msgpack array: per job the number of its client's reply
-- channel (0: none). Each record stored is also published under its own key as before;
-- besides, each channel gets ONE message for the batch (tasks/wire/replies.py,
-- ReplyBatch):
--   form 1: ARGV[B + 3 ..] the channels; each gets msgpack {v = 1, ids, records} of the
--           records stored for that client, in order;
--   form 2: ARGV[B + 3 ..] pairs (channel, columns): the columns (a version 2 ReplyBatch
--           the worker packed) are published as they are, unread here; a channel whose
--           columns are empty (its client reads version 1 only), or one of whose jobs
--           kept its cancelled record, gets the version 1 message instead.
local ttl = ARGV[1]
local ids = cmsgpack.unpack(ARGV[2])
local result_prefix, inflight_prefix = ARGV[3], ARGV[4]
local B = 4 + #ids  -- the last record's argument
local replies = #ARGV > B
local columns = replies and ARGV[B + 1] == '2'
local numbers = nil
local batches, order = {}, {}
local kept = {}  -- form 2: per channel, true if one of its jobs kept a cancelled record
if replies then
  numbers = cmsgpack.unpack(ARGV[B + 2])
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
  if columns then return ARGV[B + 1 + 2 * c] end
  return ARGV[B + 2 + c]
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
    local record = ARGV[4 + i]
    redis.call('SET', keys[i], record, 'EX', ttl)
    redis.call('PUBLISH', keys[i], record)
    stored = stored + 1
    if replies and not columns and numbers[i] > 0 then
      add(numbers[i], id, record)
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
  for c = 1, (#ARGV - B - 2) / 2 do
    local blob = ARGV[B + 2 + 2 * c]
    if blob ~= '' and not kept[c] then
      redis.call('PUBLISH', channel(c), blob)
    else
      fallback[c] = true
    end
  end
  if next(fallback) then
    for i, id in ipairs(ids) do
      local c = numbers[i]
      if fallback[c] and not skipped[i] then add(c, id, ARGV[4 + i]) end
    end
  end
end
for _, c in ipairs(order) do  -- version 1 messages, of either form
  local b = batches[c]
  redis.call('PUBLISH', channel(c), cmsgpack.pack({v = 1, ids = b.ids, records = b.records}))
end
return stored
