"""Handles and cancels, the parts both clients share: what a handle key holds, who may
resolve it, and what the cancel script answers.

A handle's key holds the job id, and, when the handle was made for an ``owner`` (the
gateway passes a hash of the caller's API key), the owner after a space. ``resolve``
refuses a handle to anyone but its owner with the same ``JobNotFound`` as a handle that
never existed, so a caller learns nothing of other callers' jobs.

A job id is a content hash, so two owners who send the same input share one job. Two
things must then stay each owner's own: a cancel through one owner's handle leaves a
job another owner holds alone (``shared``; the job's owners are a set beside it), and
whether a handle's job was a cache hit, with the hit's own timing, is recorded in the
handle, not read from what the process remembers of anyone's submissions.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from tasks import lua
from tasks.errors import JobNotFound
from tasks.schema import CancelOutcome

#: tasks/lua/cancel.lua, and its answers.
CANCEL_SCRIPT = lua.source("revoked", "cancel")
CANCEL_OUTCOMES = {
    "cancelled": CancelOutcome.CANCELLED,
    "already": CancelOutcome.ALREADY_CANCELLED,
    "running": CancelOutcome.RUNNING,
    "finished": CancelOutcome.FINISHED,
    "unknown": CancelOutcome.UNKNOWN,
    "shared": CancelOutcome.SHARED,
}

#: The owner field of a handle made for a cache hit without an owner.
NO_OWNER = "*"


@dataclass(frozen=True)
class HandleRef:
    """What a handle stands for: its job, and, when the handle was made for a cache hit,
    when that submission asked and was answered (its own timing)."""

    job_id: str
    is_handle: bool = False
    hit: tuple[float, float] | None = None


def encode_handle(job_id: str, owner: str | None, hit: tuple[float, float] | None = None) -> str:
    """The value of a handle's key: ``id``, ``id owner``, or ``id owner asked answered``."""
    if owner is not None and (not owner or " " in owner or owner == NO_OWNER):
        raise ValueError("an owner is a non-empty string without spaces (and not '*')")
    if hit is None:
        return job_id if owner is None else f"{job_id} {owner}"
    return f"{job_id} {owner or NO_OWNER} {hit[0]!r} {hit[1]!r}"


def decode_ref(handle: str, raw: bytes | str | None, owner: str | None) -> HandleRef:
    """What ``handle`` stands for, for ``owner``; ``JobNotFound`` when there is none (or
    the handle is someone else's). A handle made without an owner resolves for anyone."""
    missing = JobNotFound(f"no job has the handle {handle[:12]}...: never made, or expired with its result")
    if raw is None:
        raise missing
    fields = (raw.decode() if isinstance(raw, bytes) else str(raw)).split(" ")
    made_for = fields[1] if len(fields) > 1 and fields[1] != NO_OWNER else ""
    if made_for and not hmac.compare_digest(made_for, owner or ""):
        raise missing
    hit = None
    if len(fields) >= 4:
        try:
            hit = (float(fields[2]), float(fields[3]))
        except ValueError:
            hit = None
    return HandleRef(fields[0], True, hit)


def decode_handle(handle: str, raw: bytes | str | None, owner: str | None) -> str:
    """The job id behind ``handle`` for ``owner`` (``decode_ref``)."""
    return decode_ref(handle, raw, owner).job_id


def queue_handle(
    pipe: Any, handle_key: str, owners_key: str, value: str, owner: str | None, ttl: int
) -> None:
    """A handle's writes on a (sync or asyncio) pipeline: the handle, and its owner among
    the job's owners (for ``cancel``), both living as long as the cache keeps results."""
    pipe.set(handle_key, value, ex=ttl)
    if owner is not None:
        pipe.sadd(owners_key, owner)
        pipe.expire(owners_key, ttl)


def cancel_call(
    result_key: str, inflight_key: str, owners_key: str, owner: str | None, record: bytes, ttl: int
) -> tuple[list[str], list[Any]]:
    """``cancel.lua``'s keys and args; with an ``owner``, a job other owners share is left alone."""
    if owner is None:
        return [result_key, inflight_key], [record, ttl]
    return [result_key, inflight_key, owners_key], [record, ttl, owner]


def hit_of(job: Any) -> tuple[float, float] | None:
    """When a cache-hit job's submission asked and was answered; None for any other job."""
    if not getattr(job, "cached", False):
        return None
    return (float(job.enqueued_at), float(job._arrived or job.enqueued_at))
