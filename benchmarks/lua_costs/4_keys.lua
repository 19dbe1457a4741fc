-- Step 4: + a key built per item.
local ids = cmsgpack.unpack(ARGV[1])
local recs = cmsgpack.unpack(ARGV[2])
local keys = {}
for i, id in ipairs(ids) do keys[i] = 'celery-task-meta-' .. id end
return #keys
