-- Step 2: + the ids unpacked.
local ids = cmsgpack.unpack(ARGV[1])
return #ids
