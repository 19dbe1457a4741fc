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

The scripts are ``tasks/lua/claim.lua`` (the claim, ``tasks/wire/``'s ``Claim``),
``status_record.lua`` (is a stored record a cache hit), ``check_and_claim.lua`` and
``reclaim.lua``.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from tasks import constants as C
from tasks import lua
from tasks.errors import TransientError, cacheable_types
from tasks.keys import inflight_key, result_key
from tasks.wire import Claim, StatusRecord

#: Per-job answers of ``check_and_claim`` (the first element of each entry).
CLAIMED, FOUND, SHARED = 0, 1, 2


class Claims:
    """Checks and claims job ids in the result backend."""

    def __init__(self, backend: redis.Redis[bytes], inflight_ttl_s: int, stale_after_s: float) -> None:
        """``stale_after_s``: a claim this old is taken over (the visibility timeout)."""
        self.backend = backend
        self.inflight_ttl_s = inflight_ttl_s
        self.stale_after_s = stale_after_s
        self._script = backend.register_script(lua.source("claim", "status_record", "check_and_claim"))
        self._reclaim = backend.register_script(lua.source("claim", "reclaim"))
        self._cacheable = ",".join(cacheable_types())

    def check_and_claim(self, ids: list[str], model_key: str) -> list[list[Any]]:
        """Per id: ``[FOUND, meta]``, ``[CLAIMED]`` (send it) or ``[SHARED]`` (queued by another)."""
        keys = [C.CACHE_STATS_KEY]
        for jid in ids:
            keys += [result_key(jid), inflight_key(jid)]
        args = [self.stale_after_s, self.inflight_ttl_s, C.WIRE_VERSION, model_key, self._cacheable]
        out: list[list[Any]] = self._script(keys=keys, args=args)
        return out

    def claim_fresh(self, ids: list[str], model_key: str) -> None:
        """Claim ids nobody can hold yet (random, for jobs that skip the cache); one round trip."""
        if ids:
            pipe = self.backend.pipeline(transaction=False)
            for jid in ids:
                pipe.set(inflight_key(jid), Claim.encode(time.time(), model_key), ex=self.inflight_ttl_s)
            pipe.execute()

    def release(self, ids: list[str], reason: str) -> None:
        """End the claims of jobs that were not sent after all (their send failed).

        Someone may already share such a job (a resubmit while the send hung): a bare
        delete would leave it waiting for a job nobody sends. So each id gets a
        ``TransientError`` failure (published, unless a record is already there), which
        wakes its waiters with a retryable error; a resubmit redoes it.
        """
        if not ids:
            return
        pipe = self.backend.pipeline(transaction=False)
        for jid in ids:
            record = StatusRecord.failure(jid, TransientError(f"job {jid} was not sent: {reason}")).encode()
            pipe.set(result_key(jid), record, nx=True, ex=self.inflight_ttl_s)
            pipe.publish(result_key(jid), record)
            pipe.delete(inflight_key(jid))
        pipe.execute()

    def reclaim(self, seen: list[tuple[str, bytes]], model_key: str) -> list[bool]:
        """Claim ids whose stored state (``seen``: id, the document read) is a failure of
        the moment, to run them again. False where the state changed since it was read
        (another producer re-ran the job meanwhile): share that run instead."""
        keys = [C.CACHE_STATS_KEY]
        for jid, _ in seen:
            keys += [result_key(jid), inflight_key(jid)]
        args = [self.stale_after_s, self.inflight_ttl_s, C.WIRE_VERSION, model_key, *(doc for _, doc in seen)]
        return [bool(won) for won in self._reclaim(keys=keys, args=args)]
