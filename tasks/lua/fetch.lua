-- Take up to ARGV[1] messages off a worker's queue lists in one atomic call
-- (workers/broker/fetcher.py), recording each exactly as kombu's QoS.append would
-- (tasks/kombu_layout.py): the unacked hash entry '[message, exchange, routing_key]'
-- and the unacked_index score (Redis's clock, so hosts whose clocks differ agree).
-- It also records who holds each message (tasks/liveness.py), so that a dead worker's
-- messages are taken back within seconds, and keeps idle workers from stampeding: only
-- the idle worker holding the leader key fetches on a doorbell ring; the others sleep
-- on the wake list, and the leader, once it takes work, hands listening on to one of
-- them (one LPUSH: Redis wakes exactly one blocked client).
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] holders, KEYS[4] the leader key,
-- KEYS[5] the wake list, KEYS[6..] lists in priority order.
-- ARGV[1] max messages, ARGV[2] max message bytes, ARGV[3] the wire version,
-- ARGV[4] the worker id ('' records no holder and takes no part in leadership),
-- ARGV[5] 'idle' (may become the leader; a follower of a live leader fetches nothing)
-- or 'busy' (a plain fetch: its last fetch was full, more may be queued),
-- ARGV[6] the alive-key prefix (a leader is live while its alive key exists).
-- Returns {lead, list key, raw message, delivery tag, ...}: lead is 1 when this worker
-- is the listening leader after the call, else 0.
-- The raw message is stored byte for byte (no JSON re-encoding), as kombu stores it.
-- A message over the byte limit is replaced by a stub (tasks/wire/control.py, OversizedStub).
local me = ARGV[4]
local lead = false
if me ~= '' and ARGV[5] == 'idle' then
  local cur = redis.call('GET', KEYS[4])
  if cur == me then
    lead = true
  elseif cur and redis.call('EXISTS', ARGV[6] .. cur) == 1 then
    return {0}  -- a live leader listens: sleep on the wake list
  else
    redis.call('SET', KEYS[4], me)
    lead = true
  end
end
local out = {0}
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 6, #KEYS do
  while #out < n * 3 + 1 do
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
      if me ~= '' then redis.call('HSET', KEYS[3], tag, me) end
    end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = item
    out[#out + 1] = tag
  end
end
if lead and #out > 1 then
  -- Busy now: hand listening on to one sleeping worker (at most one token waits).
  redis.call('DEL', KEYS[4])
  redis.call('LPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], 0, 0)
  lead = false
end
out[1] = lead and 1 or 0
return out
