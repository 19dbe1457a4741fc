-- Step 3: + the records unpacked (each record's bytes made a Lua string again).
local ids = cmsgpack.unpack(ARGV[1])
local recs = cmsgpack.unpack(ARGV[2])
return #recs
