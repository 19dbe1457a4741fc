-- Which of a fetch's jobs were cancelled while queued (workers/serving/store.py), in one
-- command: a pipeline of a GETRANGE per job cost the worker more CPU to pack and parse
-- than the rest of its bulk path. Needs revoked.lua and slices.lua. ARGV[1] the jobs'
-- ids, one msgpack array (one argument, not one key per job: store.lua says why),
-- ARGV[2] the prefix of their result keys. Returns the (1-based) positions of the jobs
-- holding a cancelled record. The records come in one MGET per slice of jobs, not a
-- GETRANGE each (slices.lua).
local ids = cmsgpack.unpack(ARGV[1])
local out = {}
for i, raw in ipairs(mget_all(prefixed(ARGV[2], ids))) do
  if is_revoked(raw) then out[#out + 1] = i end
end
return out
