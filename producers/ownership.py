"""Handles and cancels, the parts both clients share: what a handle key holds, who may
resolve it, and what the cancel script answers.

A handle's key holds the job id, and, when the handle was made for an ``owner`` (the
gateway passes a hash of the caller's API key), the owner after a space. ``resolve``
refuses a handle to anyone but its owner with the same ``JobNotFound`` as a handle that
never existed, so a caller learns nothing of other callers' jobs.
"""

from __future__ import annotations

import hmac

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
}


def encode_handle(job_id: str, owner: str | None) -> str:
    """The value of a handle's key."""
    if owner is not None and (not owner or " " in owner):
        raise ValueError("an owner is a non-empty string without spaces")
    return job_id if owner is None else f"{job_id} {owner}"


def decode_handle(handle: str, raw: bytes | str | None, owner: str | None) -> str:
    """The job id behind ``handle`` for ``owner``; ``JobNotFound`` when there is none (or
    the handle is someone else's). A handle made without an owner resolves for anyone."""
    missing = JobNotFound(f"no job has the handle {handle[:12]}...: never made, or expired with its result")
    if raw is None:
        raise missing
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    jid, _, made_for = value.partition(" ")
    if made_for and not hmac.compare_digest(made_for, owner or ""):
        raise missing
    return jid
