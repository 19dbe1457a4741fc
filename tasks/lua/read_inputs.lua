-- Read inputs stored beside their messages (workers/broker/stored_inputs.py), refusing
-- any over the payload limit without reading it. KEYS: input keys; ARGV: the limit, or
-- one limit per key (a bulk message's stacked inputs have a limit of their own).
-- Per key: its value, false (missing, or not a string) or its length (over the limit).
local out = {}
local per_key = #ARGV == #KEYS
for i = 1, #KEYS do
  local limit = tonumber(per_key and ARGV[i] or ARGV[1])
  local n = redis.pcall('STRLEN', KEYS[i])
  if type(n) ~= 'number' or n == 0 then
    out[i] = false
  elseif n > limit then
    out[i] = n
  else
    out[i] = redis.call('GET', KEYS[i])
  end
end
return out
