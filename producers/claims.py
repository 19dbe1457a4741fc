"""The cache check and the in-flight claim of job ids: one round trip per chunk of jobs.

A job id is the content hash of model, variant, version and input, so the result key
*is* the cache key. Before sending, the producer asks Redis, atomically per chunk,
whether each id has a stored result (a cache hit, or a cached failure for bad input),
is already queued by someone else (then the job is shared, not sent twice), or is new
(then it is claimed, and sent).

A claim records when it was made, on Redis's clock. One older than the visibility
timeout may be stale: the producer that made it may have died before sending, or the
message may have been lost. So a claim that old is taken over and the job sent again,
and a stale claim never blocks a resubmit for longer than the visibility timeout. The
price: a job still waiting in a queue deeper than that is computed twice if someone
submits its input again meanwhile (the results are the same).
"""

from __future__ import annotations

from typing import Any

import redis

from tasks import constants as C
from tasks.keys import inflight_key, result_key

#: Per-job answers of ``check_and_claim`` (the first element of each entry).
CLAIMED, FOUND, SHARED = 0, 1, 2

# Claims KEYS[k] unless a claim younger than ARGV[1] seconds holds it; ARGV[2] the TTL.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stamp = string.format('%.6f', now)
local function claim(key)
  if redis.call('SET', key, stamp, 'NX', 'EX', ARGV[2]) then return true end
  local at = tonumber(redis.call('GET', key))
  if at and now - at < tonumber(ARGV[1]) then return false end
  redis.call('SET', key, stamp, 'EX', ARGV[2])  -- stale: its job may never run
  return true
end
"""

# One round trip checks the cache and claims the ids of many jobs. KEYS[1] is the
# cache-stats hash, then (result key, in-flight key) per job; ARGV[3] model:variant.
# Per job it returns
#   {1, meta}  something is stored under this id (a result, a failure or a state)
#   {0}        nothing stored, and we claimed the id: enqueue it
#   {2}        nothing stored, but someone else queued it recently
# and counts cache hits and misses for the workers' /metrics.
_CHECK_AND_CLAIM = (
    _CLAIM
    + """
local out = {}
local hits, misses = 0, 0
for i = 2, #KEYS, 2 do
  local r = redis.call('GET', KEYS[i])
  if r then
    local ok, meta = pcall(cjson.decode, r)
    if ok and type(meta) == 'table' and (meta.status == 'SUCCESS' or (meta.status == 'FAILURE'
        and type(meta.result) == 'table' and (meta.result.exc_type == 'BadInput'
        or meta.result.exc_type == 'PayloadTooLarge'))) then
      hits = hits + 1
    end
    out[#out + 1] = {1, r}
  elseif claim(KEYS[i + 1]) then
    misses = misses + 1
    out[#out + 1] = {0}
  else
    out[#out + 1] = {2}
  end
end
if hits > 0 then redis.call('HINCRBY', KEYS[1], ARGV[3] .. ':hit', hits) end
if misses > 0 then redis.call('HINCRBY', KEYS[1], ARGV[3] .. ':miss', misses) end
return out
"""
)


# Redo failures of the moment, atomically per id. KEYS[1] the cache-stats hash, then
# (result key, in-flight key) per job; ARGV[3] model:variant, ARGV[4..] the document
# each result key held when it was read. The old failure is deleted first, or a
# waiter would read it as this run's result; if the key holds something else by now
# (another producer's redo stored a result), it is left alone and the id not claimed.
# Returns 1 (claimed: send it) or 0 per job.
_RECLAIM = (
    _CLAIM
    + """
local out = {}
local claimed = 0
for i = 2, #KEYS, 2 do
  local cur = redis.call('GET', KEYS[i])
  local won = false
  if cur == ARGV[3 + i / 2] then
    redis.call('DEL', KEYS[i])
    redis.call('SET', KEYS[i + 1], stamp, 'EX', ARGV[2])
    won = true
  elseif not cur then
    won = claim(KEYS[i + 1])
  end
  if won then claimed = claimed + 1 end
  out[#out + 1] = won and 1 or 0
end
if claimed > 0 then redis.call('HINCRBY', KEYS[1], ARGV[3] .. ':miss', claimed) end
return out
"""
)


class Claims:
    """Checks and claims job ids in the result backend."""

    def __init__(self, backend: redis.Redis[bytes], inflight_ttl_s: int, stale_after_s: float) -> None:
        """``stale_after_s``: a claim this old is taken over (the visibility timeout)."""
        self.backend = backend
        self.inflight_ttl_s = inflight_ttl_s
        self.stale_after_s = stale_after_s
        self._script = backend.register_script(_CHECK_AND_CLAIM)
        self._reclaim = backend.register_script(_RECLAIM)

    def check_and_claim(self, ids: list[str], model_key: str) -> list[list[Any]]:
        """Per id: ``[FOUND, meta]``, ``[CLAIMED]`` (send it) or ``[SHARED]`` (queued by another)."""
        keys = [C.CACHE_STATS_KEY]
        for jid in ids:
            keys += [result_key(jid), inflight_key(jid)]
        args = [self.stale_after_s, self.inflight_ttl_s, model_key]
        out: list[list[Any]] = self._script(keys=keys, args=args)
        return out

    def reclaim(self, seen: list[tuple[str, bytes]], model_key: str) -> list[bool]:
        """Claim ids whose stored state (``seen``: id, the document read) is a failure of
        the moment, to run them again. False where the state changed since it was read
        (another producer re-ran the job meanwhile): share that run instead."""
        keys = [C.CACHE_STATS_KEY]
        for jid, _ in seen:
            keys += [result_key(jid), inflight_key(jid)]
        args = [self.stale_after_s, self.inflight_ttl_s, model_key, *(doc for _, doc in seen)]
        return [bool(won) for won in self._reclaim(keys=keys, args=args)]
