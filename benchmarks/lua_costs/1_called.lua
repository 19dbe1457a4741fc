-- benchmarks/lua_costs.py, step 1: the script called, its arguments passed (ARGV[1] the
-- ids, one msgpack array; ARGV[2] the records, one msgpack array), nothing done.
return 1
