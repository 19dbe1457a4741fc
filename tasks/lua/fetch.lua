-- Take up to ARGV[1] messages off a worker's queue lists in one atomic call
-- (workers/broker/fetcher.py), recording each exactly as kombu's QoS.append would
-- (tasks/kombu_layout.py): the unacked hash entry '[message, exchange, routing_key]'
-- and the unacked_index score (Redis's clock, so hosts whose clocks differ agree).
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3..] lists in priority order.
-- ARGV[1] max messages, ARGV[2] max message bytes, ARGV[3] the wire version.
-- Returns {list key, raw message, delivery tag}...
-- The raw message is stored byte for byte (no JSON re-encoding), as kombu stores it.
-- A message over the byte limit is replaced by a stub (tasks/wire/control.py, OversizedStub).
local out = {}
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 3, #KEYS do
  while #out < n * 3 do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    -- kombu writes these fields itself (json.dumps defaults); a pattern finds them
    -- without decoding a bulk message's hundreds of kilobytes. Anything unusual
    -- falls back to a full decode.
    -- The properties close the envelope: look at its last kilobyte only, so a big
    -- message (megabytes of base64) costs no more than a small one.
    local tail = string.sub(item, -1024)
    local tag = string.match(tail, '"delivery_tag": "([%w%-]+)"')
    local ex, rk = string.match(tail, '"delivery_info": {"exchange": "([^"]*)", "routing_key": "([^"]*)"}')
    if #item > limit then
      -- Too big to hand over: a stub with the task id (headers close the envelope
      -- too, before the properties) stands in for it, in the worker and in unacked.
      -- 64 KiB: Celery caps argsrepr and kwargsrepr at 1 KiB each by default.
      local htail = string.sub(item, -65536)
      local id = string.match(htail, '"headers": {.-"id": "([^"\\]*)"') or ''
      local task = string.match(htail, '"headers": {.-"task": "([^"\\]*)"') or ''
      if not tag or not rk then tag, ex, rk = '', '', '' end
      item = cjson.encode({v = tonumber(ARGV[3]), inferq_oversized = #item, inferq_limit = limit,
        headers = {id = id, task = task},
        properties = {delivery_tag = tag, delivery_info = {exchange = ex, routing_key = rk}}})
    elseif not tag or not rk then
      local ok, msg = pcall(cjson.decode, item)
      tag, ex, rk = nil, '', ''
      if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
        tag = msg.properties.delivery_tag
        local di = msg.properties.delivery_info
        if type(di) == 'table' then ex = di.exchange or ''; rk = di.routing_key or '' end
      end
    end
    if type(tag) ~= 'string' then tag = '' end
    if tag ~= '' then
      redis.call('ZADD', KEYS[2], now, tag)
      redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
    end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = item
    out[#out + 1] = tag
  end
end
return out
