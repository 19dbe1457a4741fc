-- Read inputs stored beside their messages (workers/broker/stored_inputs.py), refusing
-- any over the payload limit without reading it. KEYS: input keys; ARGV[1] the limit.
-- Per key: its value, false (missing, or not a string) or its length (over the limit).
local out = {}
for i = 1, #KEYS do
  local n = redis.pcall('STRLEN', KEYS[i])
  if type(n) ~= 'number' or n == 0 then
    out[i] = false
  elseif n > tonumber(ARGV[1]) then
    out[i] = n
  else
    out[i] = redis.call('GET', KEYS[i])
  end
end
return out
