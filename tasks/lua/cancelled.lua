-- Which of a fetch's jobs were cancelled while queued (workers/serving/store.py), in one
-- command: a pipeline of a GETRANGE per job cost the worker more CPU to pack and parse
-- than the rest of its bulk path. Needs revoked.lua. ARGV[1] the jobs' ids, one msgpack
-- array (one argument, not one key per job: store.lua says why), ARGV[2] the prefix of
-- their result keys. Returns the (1-based) positions of the jobs holding a cancelled
-- record.
local ids = cmsgpack.unpack(ARGV[1])
local out = {}
for i, id in ipairs(ids) do
  if is_revoked(redis.call('GETRANGE', ARGV[2] .. id, 0, 63)) then
    out[#out + 1] = i
  end
end
return out
