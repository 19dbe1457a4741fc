-- Which of a fetch's jobs were cancelled while queued (workers/serving/store.py), in one
-- command: a pipeline of a GETRANGE per job cost the worker more CPU to pack and parse
-- than the rest of its bulk path. Needs revoked.lua. ARGV[1] the jobs' ids, one msgpack
-- array (one argument, not one key per job: store.lua says why), ARGV[2] the prefix of
-- their result keys. Returns the (1-based) positions of the jobs holding a cancelled
-- record.
-- One MGET per slice of jobs, not a GETRANGE each (a redis.call costs the script about
-- a microsecond around its command; store.lua says more).
local ids = cmsgpack.unpack(ARGV[1])
local out = {}
local SLICE = 1000  -- unpack() puts a slice on Lua's C stack (LUAI_MAXCSTACK 8000)
for s = 1, #ids, SLICE do
  local e = math.min(s + SLICE - 1, #ids)
  local keys = {}
  for i = s, e do keys[#keys + 1] = ARGV[2] .. ids[i] end
  local got = redis.call('MGET', unpack(keys))
  for j = 1, #got do
    if is_revoked(got[j]) then out[#out + 1] = s + j - 1 end
  end
end
return out
