-- A script with one command inside (benchmarks/redis_commands.py): where MONITOR lists
-- that command, before or after the EVAL line, tells how to charge scripts' commands.
return redis.call('EXISTS', KEYS[1])
