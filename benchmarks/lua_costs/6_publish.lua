-- Step 6: + a PUBLISH per item (what store.lua does per job, records as one array).
local ids = cmsgpack.unpack(ARGV[1])
local recs = cmsgpack.unpack(ARGV[2])
for i, id in ipairs(ids) do
  local k = 'celery-task-meta-' .. id
  redis.call('SET', k, recs[i], 'EX', 600)
  redis.call('PUBLISH', k, recs[i])
end
return #ids
