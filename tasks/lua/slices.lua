-- Many keys in one command per slice, not one redis.call per key: inside a script each
-- redis.call costs about a microsecond around its command, more than an MGET or DEL
-- pays per key. unpack() puts a slice on Lua's C stack (LUAI_MAXCSTACK 8000), hence
-- slices of SLICE keys.
local SLICE = 1000

-- The values of keys (false where a key is missing), in order.
local function mget_all(keys)
  local out = {}
  for s = 1, #keys, SLICE do
    local got = redis.call('MGET', unpack(keys, s, math.min(s + SLICE - 1, #keys)))
    for j = 1, #got do out[s + j - 1] = got[j] end
  end
  return out
end

local function del_all(keys)
  for s = 1, #keys, SLICE do
    redis.call('DEL', unpack(keys, s, math.min(s + SLICE - 1, #keys)))
  end
end

-- prefix .. id for each id.
local function prefixed(prefix, ids)
  local out = {}
  for i = 1, #ids do out[i] = prefix .. ids[i] end
  return out
end
