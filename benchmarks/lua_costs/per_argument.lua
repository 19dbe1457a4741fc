-- Step 6 with each record its own argument (ARGV[1 + i]), as store.lua takes them: each
-- record's bytes made a Lua string once, not twice.
local ids = cmsgpack.unpack(ARGV[1])
for i, id in ipairs(ids) do
  local k = 'celery-task-meta-' .. id
  local rec = ARGV[1 + i]
  redis.call('SET', k, rec, 'EX', 600)
  redis.call('PUBLISH', k, rec)
end
return #ids
