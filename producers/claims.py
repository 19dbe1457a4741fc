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
import redis.asyncio

from tasks import constants as C
from tasks import lua
from tasks.errors import TransientError, cacheable_types
from tasks.keys import inflight_key, result_key
from tasks.wire import Claim, StatusRecord

#: Per-job answers of ``check_and_claim`` (the first element of each entry).
CLAIMED, FOUND, SHARED = 0, 1, 2


class ClaimCommands:
    """The claims' Redis commands, built without I/O (shared by both clients)."""

    def __init__(self, inflight_ttl_s: int, stale_after_s: float) -> None:
        """``stale_after_s``: a claim this old is taken over (the visibility timeout)."""
        self.inflight_ttl_s = inflight_ttl_s
        self.stale_after_s = stale_after_s
        self._cacheable = ",".join(cacheable_types())

    def check_args(self, ids: list[str], model_key: str) -> tuple[list[str], list[Any]]:
        keys = [C.CACHE_STATS_KEY]
        for jid in ids:
            keys += [result_key(jid), inflight_key(jid)]
        return keys, [self.stale_after_s, self.inflight_ttl_s, C.WIRE_VERSION, model_key, self._cacheable]

    def reclaim_args(self, seen: list[tuple[str, bytes]], model_key: str) -> tuple[list[str], list[Any]]:
        keys = [C.CACHE_STATS_KEY]
        for jid, _ in seen:
            keys += [result_key(jid), inflight_key(jid)]
        return keys, [
            self.stale_after_s,
            self.inflight_ttl_s,
            C.WIRE_VERSION,
            model_key,
            *(d for _, d in seen),
        ]

    def queue_fresh(self, pipe: Any, ids: list[str], model_key: str) -> None:
        """Claim ids nobody can hold yet (random, for jobs that skip the cache)."""
        for jid in ids:
            pipe.set(inflight_key(jid), Claim.encode(time.time(), model_key), ex=self.inflight_ttl_s)

    def queue_release(self, pipe: Any, ids: list[str], reason: str) -> None:
        """End the claims of jobs that were not sent after all (their send failed).

        Someone may already share such a job (a resubmit while the send hung): a bare
        delete would leave it waiting for a job nobody sends. So each id gets a
        ``TransientError`` failure (published, unless a record is already there), which
        wakes its waiters with a retryable error; a resubmit redoes it.
        """
        for jid in ids:
            record = StatusRecord.failure(jid, TransientError(f"job {jid} was not sent: {reason}")).encode()
            pipe.set(result_key(jid), record, nx=True, ex=self.inflight_ttl_s)
            pipe.publish(result_key(jid), record)
            pipe.delete(inflight_key(jid))


#: The Lua sources of the claim scripts.
CHECK_AND_CLAIM = lua.source("claim", "status_record", "check_and_claim")
RECLAIM = lua.source("claim", "reclaim")


class Claims(ClaimCommands):
    """Checks and claims job ids in the result backend (redis-py)."""

    def __init__(self, backend: redis.Redis[bytes], inflight_ttl_s: int, stale_after_s: float) -> None:
        super().__init__(inflight_ttl_s, stale_after_s)
        self.backend = backend
        self._script = backend.register_script(CHECK_AND_CLAIM)
        self._reclaim = backend.register_script(RECLAIM)

    def check_and_claim(self, ids: list[str], model_key: str) -> list[list[Any]]:
        """Per id: ``[FOUND, meta]``, ``[CLAIMED]`` (send it) or ``[SHARED]`` (queued by another)."""
        keys, args = self.check_args(ids, model_key)
        out: list[list[Any]] = self._script(keys=keys, args=args)
        return out

    def claim_fresh(self, ids: list[str], model_key: str) -> None:
        if ids:
            pipe = self.backend.pipeline(transaction=False)
            self.queue_fresh(pipe, ids, model_key)
            pipe.execute()

    def release(self, ids: list[str], reason: str) -> None:
        if ids:
            pipe = self.backend.pipeline(transaction=False)
            self.queue_release(pipe, ids, reason)
            pipe.execute()

    def reclaim(self, seen: list[tuple[str, bytes]], model_key: str) -> list[bool]:
        """Claim ids whose stored state (``seen``: id, the document read) is a failure of
        the moment, to run them again. False where the state changed since it was read
        (another producer re-ran the job meanwhile): share that run instead."""
        keys, args = self.reclaim_args(seen, model_key)
        return [bool(won) for won in self._reclaim(keys=keys, args=args)]


class AsyncClaims(ClaimCommands):
    """``Claims`` on ``redis.asyncio``."""

    def __init__(
        self, backend: redis.asyncio.Redis[bytes], inflight_ttl_s: int, stale_after_s: float
    ) -> None:
        super().__init__(inflight_ttl_s, stale_after_s)
        self.backend = backend
        self._script = backend.register_script(CHECK_AND_CLAIM)
        self._reclaim = backend.register_script(RECLAIM)

    async def check_and_claim(self, ids: list[str], model_key: str) -> list[list[Any]]:
        keys, args = self.check_args(ids, model_key)
        out: list[list[Any]] = await self._script(keys=keys, args=args)
        return out

    async def claim_fresh(self, ids: list[str], model_key: str) -> None:
        if ids:
            pipe = self.backend.pipeline(transaction=False)
            self.queue_fresh(pipe, ids, model_key)
            await pipe.execute()

    async def release(self, ids: list[str], reason: str) -> None:
        if ids:
            pipe = self.backend.pipeline(transaction=False)
            self.queue_release(pipe, ids, reason)
            await pipe.execute()

    async def reclaim(self, seen: list[tuple[str, bytes]], model_key: str) -> list[bool]:
        keys, args = self.reclaim_args(seen, model_key)
        return [bool(won) for won in await self._reclaim(keys=keys, args=args)]
