"""How a job's status is read from its stored record and its in-flight claim (no I/O).

A record that says where the job is (running, finished, cancelled...) is the answer.
Without one, a claim means the job is queued, unless the claim is older than the
visibility timeout and nothing is left that could still run it (its queue lists are
empty and no message is held unacknowledged anywhere): then its message is gone,
``lost``. Any doubt reads as queued. Both clients read the same keys in the same
order; only the calls are theirs.
"""

from __future__ import annotations

from typing import Any

from tasks.keys import queue_name
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
