-- Take up to ARGV[1] messages off a worker's queue lists in one atomic call
-- (workers/broker/fetcher.py), recording each exactly as kombu's QoS.append would
-- (tasks/kombu_layout.py): the unacked hash entry '[message, exchange, routing_key]'
-- and the unacked_index score (Redis's clock, so hosts whose clocks differ agree).
-- It also records who holds each message (tasks/liveness.py), so that a dead worker's
-- messages are taken back within seconds.
--
-- And it keeps idle workers from stampeding. Of the workers serving a set of queues,
-- one listens (the leader key holds its id, with ' busy' appended while it has work in
-- hand); the other idle ones sleep in a BLPOP on the wake list, each noted in the
-- sleepers set (scored by when its sleep ends, so a dead sleeper drops out). A leader
-- that takes work while others sleep hands listening on: the key says a hand-over is
-- under way (PENDING, for 2 s at most) and one token goes on the wake list, which Redis
-- gives to exactly one sleeper, the next leader ('take'). With nobody asleep it keeps
-- listening while busy (a lone worker fills its next batch as before), marked busy, and
-- a worker that goes idle takes listening from a busy leader instead of sleeping.
--
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] holders, KEYS[4] the leader key,
-- KEYS[5] the wake list, KEYS[6] the sleepers, KEYS[7..] lists in priority order.
-- ARGV[1] max messages, ARGV[2] max message bytes, ARGV[3] the wire version,
-- ARGV[4] the worker id ('' records no holder and takes no part in leadership),
-- ARGV[5] the mode: 'idle' (may become the leader; behind a live idle leader it sleeps
-- and fetches nothing), 'woke' (as idle, after a sleep that ended without a token),
-- 'take' (handed a token: it becomes the leader) or 'busy' (a plain fetch: its last
-- fetch was full, more may be queued), ARGV[6] the alive-key prefix, ARGV[7] 1 when
-- this worker has work in hand, ARGV[8] how long a sleep lasts at most (seconds).
-- Returns {lead, list key, raw message, delivery tag, ...}: lead is 1 when this worker
-- listens after the call, 0 when it should sleep (or just handed over), -1 when its
-- own lease has lapsed (it takes nothing then).
-- The raw message is stored byte for byte (no JSON re-encoding), as kombu stores it.
-- Redis commands are counted (issue 18): one EXISTS tells how many lists hold
-- messages, so empty priority lists cost nothing; each list is popped once (RPOP with a
-- count, Redis >= 6.2); the records of all messages taken go in one ZADD and one HSET
-- each.
-- A message over the byte limit is replaced by a stub (tasks/wire/control.py, OversizedStub).
local me = ARGV[4]
local mode = ARGV[5]
local PENDING = '~handing-over'
local lead = false
-- A worker whose own lease lapsed (its beats stalled) takes nothing: another worker
-- may be taking its messages back right now, and would run new ones twice.
if me ~= '' and redis.call('EXISTS', ARGV[6] .. me) == 0 then return {-1} end
local clock
local function now()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return clock
end
local mine = me
if ARGV[7] == '1' then mine = me .. ' busy' end
if me ~= '' and mode ~= 'busy' then
  if mode ~= 'idle' then redis.call('ZREM', KEYS[6], me) end
  local cur = redis.call('GET', KEYS[4])
  local holder, busy = nil, false
  if cur then
    holder = string.match(cur, '^(.*) busy$')
    busy = holder ~= nil
    holder = holder or cur
  end
  if mode == 'take' or not cur or holder == me or busy
      or (cur ~= PENDING and redis.call('EXISTS', ARGV[6] .. holder) == 0) then
    if cur ~= mine then redis.call('SET', KEYS[4], mine) end
    lead = true
  else
    -- A live leader listens, or a hand-over is under way: sleep on the wake list.
    redis.call('ZADD', KEYS[6], now() + tonumber(ARGV[8]), me)
    return {0}
  end
end
local out = {lead and 1 or 0}
local nonempty = redis.call('EXISTS', unpack(KEYS, 7))
if nonempty == 0 then return out end
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local taken = 0
local tags, entries = {}, {}
for i = 7, #KEYS do
  if nonempty == 0 or taken >= n then break end
  local items = redis.call('RPOP', KEYS[i], n - taken)
  if items then
    nonempty = nonempty - 1
    for _, item in ipairs(items) do
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
        -- The sender's reply channel too (inferq's only: a job sent by inferq's client
        -- is awaited there), so its PayloadTooLarge answer reaches it.
        local reply = string.match(htail, '"reply_to": "(inferq:reply:[%w%-]+)"') or ''
        if not tag or not rk then tag, ex, rk = '', '', '' end
        item = cjson.encode({v = tonumber(ARGV[3]), inferq_oversized = #item, inferq_limit = limit,
          headers = {id = id, task = task},
          properties = {delivery_tag = tag, reply_to = reply, delivery_info = {exchange = ex, routing_key = rk}}})
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
        tags[#tags + 1] = tag
        entries[#entries + 1] = '[' .. item .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
      end
      out[#out + 1] = KEYS[i]
      out[#out + 1] = item
      out[#out + 1] = tag
      taken = taken + 1
    end
  end
end
if #tags > 0 then
  local at = now()
  -- In pieces of 500 messages: Lua's unpack takes a few thousand values at most.
  for first = 1, #tags, 500 do
    local last = math.min(first + 499, #tags)
    local scored, hashed, held = {}, {}, {}
    for j = first, last do
      scored[#scored + 1] = at
      scored[#scored + 1] = tags[j]
      hashed[#hashed + 1] = tags[j]
      hashed[#hashed + 1] = entries[j]
      held[#held + 1] = tags[j]
      held[#held + 1] = me
    end
    redis.call('ZADD', KEYS[2], unpack(scored))
    redis.call('HSET', KEYS[1], unpack(hashed))
    if me ~= '' then redis.call('HSET', KEYS[3], unpack(held)) end
  end
end
if lead and taken > 0 then
  if redis.call('ZCOUNT', KEYS[6], now(), '+inf') > 0 then
    -- Busy now, and others sleep: hand listening on to one of them.
    redis.call('SET', KEYS[4], PENDING, 'PX', 2000)
    if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
    out[1] = 0
  elseif mine == me then
    redis.call('SET', KEYS[4], me .. ' busy')  -- a worker that goes idle takes over
  end
end
return out
