"""The cache check and the in-flight claim of job ids: one round trip per chunk of jobs.

A job id is the content hash of model, variant, version and input, so the result key
*is* the cache key. Before sending, the producer asks Redis, atomically per chunk,
whether each id has a stored result (a cache hit, or a cached failure for bad input),
is already queued by someone else (then the job is shared, not sent twice), or is new
(then it is claimed, and sent).

A claim records when it was made, on Redis's clock. One older than the visibility
timeout *may* be stale: the producer that made it may have died before sending, or the
message may have been lost (a Redis without persistence restarted). Or it may be fine:
its message still waits in a queue deeper than the timeout, or a live worker is running
it. Taking it over then would run the job twice, so a claim that old is taken over only
once the broker shows that nothing could still run the job (``nothing_could_run_it``):

- none of the job queue's priority lists holds a message (FIFO lists: any message
  still queued might be this job's, and a taken-back one goes back on them);
- no message anywhere is unacknowledged with a score at or after the claim: a job's
  message is sent after its claim and recorded in ``unacked_index`` when fetched (or
  renewed while held), so an entry at least that recent might be it.

Everything else reads as "someone queued it": the job is shared, and the claim lapses
after its TTL at the latest (``Settings.inflight_ttl_s``; a job queued longer than that
can still be sent twice, and a lost one in a queue that never drains is resent only
then). The look at the broker costs
one transaction, only for claims that old; the take-over re-checks, atomically, that the
claim is still the one read (``take_over.lua``). The broker and the result backend may
be two servers with their own clocks: no time of one is compared with a time of the
other, only the claim's age (result backend) with entry ages (broker), with the time
the two calls took as margin. ``status()`` calls such a job ``lost`` by a stricter rule
(nothing unacknowledged at all), so it may say ``queued`` a little longer.

The scripts are ``tasks/lua/claim.lua`` (the claim, ``tasks/wire/``'s ``Claim``),
``status_record.lua`` (is a stored record a cache hit), ``check_and_claim.lua``,
``take_over.lua`` and ``reclaim.lua``. The steps are written once, without I/O
(``ClaimCommands.check_and_claim_steps``), and each client runs them its own way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack
import redis
import redis.asyncio

from producers.status import Reading, run_steps, run_steps_async
from tasks import constants as C
from tasks import lua
from tasks.errors import TransientError, cacheable_types
from tasks.keys import inflight_key, queue_name, result_key
from tasks.kombu_layout import UNACKED_INDEX, queue_lists
from tasks.wire import Claim, StatusRecord

#: Per-job answers of ``check_and_claim`` (the first element of each entry).
CLAIMED, FOUND, SHARED = 0, 1, 2
#: The script's answer for a claim older than the visibility timeout (with the claim and
#: its age); ``check_and_claim`` turns it into ``CLAIMED`` or ``SHARED``.
MAYBE_STALE = 3
#: The codes as ``check_and_claim.lua`` writes them: one ASCII digit per job.
_ZERO = ord("0")
_SHARED_CODE = _ZERO + SHARED
#: Seconds added to the margin between the two servers' readings (``nothing_could_run_it``).
CLOCK_SLACK_S = 1.0


def nothing_could_run_it(
    list_lengths: list[int], newest_unacked: float | None, broker_now: float, claim_age: float, margin: float
) -> bool:
    """Whether a claim ``claim_age`` seconds old (-1: unknown) has no message left that
    could still run its job, from one reading of the broker: its queue's list lengths,
    the newest ``unacked_index`` score (None: nothing unacknowledged) and the broker's
    time. ``margin``: at most how far apart (in seconds) the claim's age and the broker's
    time were read. Any doubt answers False."""
    if any(list_lengths):
        return False
    if newest_unacked is None:
        return True
    if claim_age < 0:
        return False
    return newest_unacked < broker_now - claim_age - margin - CLOCK_SLACK_S


def read_check_reply(reply: list[Any], n: int) -> list[list[Any]]:
    """``check_and_claim.lua``'s answer (one code per job, then the records and stale
    claims in order) as one entry per job: ``[FOUND, record]``, ``[CLAIMED]``,
    ``[SHARED]`` or ``[MAYBE_STALE, claim, age]``."""
    codes, extras = reply
    if len(codes) != n:
        raise TransientError(f"the cache check answered for {len(codes)} jobs, expected {n}")
    if not extras:  # the common case: nothing stored, nothing stale
        return [[SHARED] if c == _SHARED_CODE else [CLAIMED] for c in codes]
    more = iter(extras)
    out: list[list[Any]] = []
    for c in codes:
        code = c - _ZERO
        if code == FOUND:
            out.append([FOUND, next(more)])
        elif code == MAYBE_STALE:
            out.append([MAYBE_STALE, next(more), next(more)])
        else:
            out.append([code])
    return out


class ClaimCommands:
    """The claims' Redis commands, built without I/O (shared by both clients)."""

    def __init__(self, inflight_ttl_s: int, stale_after_s: float) -> None:
        """``stale_after_s``: a claim this old is taken over (the visibility timeout)."""
        self.inflight_ttl_s = inflight_ttl_s
        self.stale_after_s = stale_after_s
        self._cacheable = ",".join(cacheable_types())

    def check_args(self, ids: list[str], model_key: str) -> tuple[list[str], list[Any]]:
        """``check_and_claim.lua``'s keys and arguments: the ids as one msgpack array."""
        return [C.CACHE_STATS_KEY], [
            self.stale_after_s,
            self.inflight_ttl_s,
            C.WIRE_VERSION,
            model_key,
            self._cacheable,
            msgpack.packb(ids),
            C.RESULT_KEY_PREFIX,
            C.INFLIGHT_KEY_PREFIX,
        ]

    def check_and_claim_steps(
        self, ids: list[str], model_key: str, check: Callable[..., Any], take_over: Callable[..., Any]
    ) -> Reading[list[list[Any]]]:
        """The cache check and claim of ``ids`` (``check``: the check script), looking at
        the broker for claims that may be stale and taking over those nothing could still
        run (``take_over``: the take-over script). Per id: ``[FOUND, record]``, ``[CLAIMED]``
        or ``[SHARED]``. One round trip unless some claim is older than ``stale_after_s``."""
        if not ids:
            return []
        started = time.monotonic()
        keys, args = self.check_args(ids, model_key)
        reply: list[Any] = yield lambda results, broker: check(keys=keys, args=args)
        answers = read_check_reply(reply, len(ids))
        maybe = [i for i, a in enumerate(answers) if int(a[0]) == MAYBE_STALE]
        if not maybe:
            return answers
        model, _, variant = model_key.partition(":")
        lists = queue_lists(queue_name(model, variant))

        def look(results: Any, broker: Any) -> Any:
            pipe = broker.pipeline(transaction=True)  # one consistent reading
            for lst in lists:
                pipe.llen(lst)
            pipe.zrevrange(UNACKED_INDEX, 0, 0, withscores=True)
            pipe.time()
            return pipe.execute()

        reading = yield look
        lengths, newest, (sec, usec) = [int(n) for n in reading[: len(lists)]], reading[-2], reading[-1]
        margin = time.monotonic() - started
        newest_score = float(newest[0][1]) if newest else None
        lost = [
            i
            for i in maybe
            if nothing_could_run_it(lengths, newest_score, sec + usec / 1e6, float(answers[i][2]), margin)
        ]
        won: list[int] = []
        if lost:
            tkeys = [C.CACHE_STATS_KEY]
            for i in lost:
                tkeys += [result_key(ids[i]), inflight_key(ids[i])]
            targs = [*args[:3], model_key, *(answers[i][1] for i in lost)]
            won = yield lambda results, broker: take_over(keys=tkeys, args=targs)
        taken = {i for i, w in zip(lost, won, strict=True) if int(w)}
        return [[CLAIMED] if i in taken else [SHARED] if i in maybe else a for i, a in enumerate(answers)]

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
CHECK_AND_CLAIM = lua.source("claim", "status_record", "slices", "check_and_claim")
TAKE_OVER = lua.source("claim", "take_over")
RECLAIM = lua.source("claim", "reclaim")


class Claims(ClaimCommands):
    """Checks and claims job ids in the result backend (redis-py)."""

    def __init__(
        self,
        backend: redis.Redis[bytes],
        inflight_ttl_s: int,
        stale_after_s: float,
        broker: redis.Redis[bytes] | None = None,
    ) -> None:
        """``broker``: where the queues and unacknowledged messages are (default: ``backend``)."""
        super().__init__(inflight_ttl_s, stale_after_s)
        self.backend = backend
        self.broker = backend if broker is None else broker
        self._script = backend.register_script(CHECK_AND_CLAIM)
        self._take_over = backend.register_script(TAKE_OVER)
        self._reclaim = backend.register_script(RECLAIM)

    def check_and_claim(self, ids: list[str], model_key: str) -> list[list[Any]]:
        """Per id: ``[FOUND, meta]``, ``[CLAIMED]`` (send it) or ``[SHARED]`` (queued by another)."""
        steps = self.check_and_claim_steps(ids, model_key, self._script, self._take_over)
        return run_steps(steps, self.backend, self.broker)

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
        self,
        backend: redis.asyncio.Redis[bytes],
        inflight_ttl_s: int,
        stale_after_s: float,
        broker: redis.asyncio.Redis[bytes] | None = None,
    ) -> None:
        super().__init__(inflight_ttl_s, stale_after_s)
        self.backend = backend
        self.broker = backend if broker is None else broker
        self._script = backend.register_script(CHECK_AND_CLAIM)
        self._take_over = backend.register_script(TAKE_OVER)
        self._reclaim = backend.register_script(RECLAIM)

    async def check_and_claim(self, ids: list[str], model_key: str) -> list[list[Any]]:
        steps = self.check_and_claim_steps(ids, model_key, self._script, self._take_over)
        return await run_steps_async(steps, self.backend, self.broker)

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
