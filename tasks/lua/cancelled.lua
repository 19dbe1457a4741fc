-- Which of a fetch's jobs were cancelled while queued (workers/serving/store.py), in one
-- command: a pipeline of a GETRANGE per job cost the worker more CPU to pack and parse
-- than the rest of its bulk path. Needs revoked.lua. KEYS: the jobs' result keys.
-- Returns the (1-based) positions of the keys holding a cancelled record.
local out = {}
for i = 1, #KEYS do
  if is_revoked(redis.call('GETRANGE', KEYS[i], 0, 63)) then
    out[#out + 1] = i
  end
end
return out
