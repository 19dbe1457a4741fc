-- Step 5: + a SET ... EX per item.
local ids = cmsgpack.unpack(ARGV[1])
local recs = cmsgpack.unpack(ARGV[2])
for i, id in ipairs(ids) do
  redis.call('SET', 'celery-task-meta-' .. id, recs[i], 'EX', 600)
end
return #ids
