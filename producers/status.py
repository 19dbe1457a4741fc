"""How a job's status is read from its stored record and its in-flight claim (no I/O).

A record that says where the job is (running, finished, cancelled...) is the answer.
Without one, a claim means the job is queued, unless the claim is older than the
visibility timeout and nothing is left that could still run it (its queue lists are
empty and no message is held unacknowledged anywhere): then its message is gone,
``lost``. Any doubt reads as queued. Both clients read the same keys in the same
order; only the calls are theirs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from tasks.errors import JobNotFound, NotReady
from tasks.keys import inflight_key, queue_name, result_key
from tasks.kombu_layout import UNACKED_INDEX, queue_lists
from tasks.schema import JobStatus
from tasks.wire import Claim, StatusRecord


def settled(record: StatusRecord | None) -> JobStatus | None:
    """The status a stored record gives on its own; None when the claim must be read."""
    if record is not None and record.job_status() is not JobStatus.QUEUED:
        return record.job_status()
    return None


def claimed_queue(claim: bytes) -> tuple[float, str] | None:
    """``(claimed at, queue)`` of a claim that could belong to a lost job; None when it
    cannot tell (an old-form claim: read as queued)."""
    at, model_key = Claim.parse(claim), Claim.model_key(claim)
    if at is None or ":" not in model_key:
        return None
    model, _, variant = model_key.partition(":")
    return at, queue_name(model, variant)


def old_enough(claimed_at: float, redis_time: tuple[int, int], visibility_timeout_s: float) -> bool:
    """Older than the visibility timeout, on Redis's clock (``TIME``'s answer)."""
    sec, usec = redis_time
    return sec + usec / 1e6 - claimed_at > visibility_timeout_s


def queue_lost_check(pipe: Any, queue: str) -> None:
    """Queue the reads that tell whether anything could still run a job of ``queue``."""
    for lst in queue_lists(queue):
        pipe.llen(lst)
    pipe.zcard(UNACKED_INDEX)


def lost(replies: list[int]) -> bool:
    return not any(replies)


#: One Redis call of a sans-I/O reading: given (result backend, broker), the call's value
#: (redis-py) or its awaitable (redis.asyncio). Readings (``read_state`` here,
#: ``health.read_model_stats``) yield these; each client runs them its own way
#: (``run_steps`` / ``run_steps_async``).
Step = Callable[[Any, Any], Any]
T = TypeVar("T")
Reading = Generator[Step, Any, T]


def read_state(job_id: str, visibility_timeout_s: float) -> Reading[tuple[StatusRecord | None, JobStatus]]:
    """A job's stored record (if any) and its status, read in the fewest round trips."""
    # One MGET, not two GETs: a worker that finishes between two reads deletes the claim
    # after writing the record, so a record read before and a claim read after would both
    # be missing and a finished job would read as ``unknown``.
    raw, claim = yield lambda results, broker: results.mget([result_key(job_id), inflight_key(job_id)])
    record = StatusRecord.parse(raw, job_id)
    known = settled(record)
    if known is not None:
        return record, known
    if claim is None:
        return record, JobStatus.UNKNOWN
    queued = claimed_queue(claim)
    if queued is None or not old_enough(
        queued[0], (yield lambda results, broker: results.time()), visibility_timeout_s
    ):
        return record, JobStatus.QUEUED
    queue = queued[1]

    def lost_check(results: Any, broker: Any) -> Any:
        pipe = broker.pipeline(transaction=False)
        queue_lost_check(pipe, queue)
        return pipe.execute()

    return record, JobStatus.LOST if lost((yield lost_check)) else JobStatus.QUEUED


def run_steps(reading: Reading[T], results: Any, broker: Any) -> T:
    """Run a reading's calls on redis-py clients."""
    try:
        step = next(reading)
        while True:
            step = reading.send(step(results, broker))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_steps_async(reading: Reading[T], results: Any, broker: Any) -> T:
    """Run a reading's calls on redis.asyncio clients."""
    try:
        step = next(reading)
        while True:
            call: Awaitable[Any] = step(results, broker)
            step = reading.send(await call)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def ready_record(job_id: str, found: StatusRecord | None, status: JobStatus) -> StatusRecord:
    """The record ``result()`` answers with, or why there is none (``JobNotFound``, ``NotReady``)."""
    if found is not None and found.ready:
        return found
    if status is JobStatus.UNKNOWN:
        raise JobNotFound(f"job {job_id} is unknown: never sent, or its result expired")
    if status is JobStatus.LOST:
        raise JobNotFound(f"job {job_id} was lost in flight (its message is gone): submit its input again")
    raise NotReady(f"job {job_id} has no result yet (status {status.value})")
