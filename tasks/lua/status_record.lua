-- Reads a job's status record (tasks/wire/results.py, StatusRecord.cacheable): may it be served
-- as a cache hit? Yes for a result, and for a failure whose error type is one of
-- `cacheable` (a set handed in by Python: tasks.errors.cacheable_types), in wire
-- version `version`. tests/integration/test_lua_agreement.py holds this to agreeing with
-- the Python reader on the same records.
local function status_cacheable(raw, version, cacheable)
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' then return false end
  local v = doc.v
  if v == nil then v = version end  -- written before records carried a version
  if type(v) ~= 'number' or v ~= version then return false end
  local result = doc.result
  if type(result) ~= 'table' then return false end
  if doc.status == 'SUCCESS' then return result.outputs ~= nil end
  if doc.status == 'FAILURE' then
    return type(result.exc_type) == 'string' and cacheable[result.exc_type] == true
  end
  return false
end

local function cacheable_set(csv)
  local set = {}
  for name in string.gmatch(csv, '[^,]+') do set[name] = true end
  return set
end
