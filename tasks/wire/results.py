"""Results, worker -> producer: a computed ``Result``, inside the job's ``StatusRecord``
(a batch's records for one client travel together: ``tasks/wire/replies.py``).

The status record is Celery's own result document (so ``AsyncResult`` reads it) plus
``v``; ``StatusRecord.parse`` is its one reader in Python, and
``tasks/lua/status_record.lua`` reads the same fields in Redis for the cache check.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from tasks.codec import array_from_json, array_to_json, contiguous
from tasks.errors import (
    Expired,
    IncompatibleVersion,
    InferqError,
    JobCancelled,
    cacheable_types,
    error_from_wire,
)
from tasks.schema import JobStatus, Timing
from tasks.wire.version import VERSION, show


@dataclass
class Result:
    """A finished job as the client returns it; ``to_wire`` is what the worker stores."""

    job_id: str
    model: str
    variant: str
    version: str
    outputs: dict[str, Any]  # name -> np.ndarray
    timing: Timing
    cached: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The JSON document inside a SUCCESS status record (what ``AsyncResult.get()`` returns)."""
        return {
            "v": VERSION,
            "model": self.model,
            "variant": self.variant,
            "version": self.version,
            "outputs": {k: array_to_json(v) for k, v in self.outputs.items()},
            "timing": self.timing.to_dict(),
        }

    @classmethod
    def from_wire(cls, job_id: str, obj: Mapping[str, Any], *, cached: bool) -> Result:
        if obj.get("v", VERSION) != VERSION:
            raise IncompatibleVersion(
                f"job {job_id}: its result is in wire version {show(obj.get('v'))}; "
                f"this client reads version {VERSION} (upgrade the client)"
            )
        return cls(
            job_id=job_id,
            model=obj["model"],
            variant=obj["variant"],
            version=str(obj["version"]),
            outputs={k: array_from_json(v) for k, v in obj["outputs"].items()},
            timing=Timing.from_dict(obj["timing"]),
            cached=cached,
        )

    def to_json(self) -> dict[str, Any]:
        """For ``--json`` output: arrays as nested lists, readable by any tool."""
        return {
            "job_id": self.job_id,
            "model": self.model,
            "variant": self.variant,
            "version": self.version,
            "cached": self.cached,
            "outputs": {k: v.tolist() for k, v in self.outputs.items()},
            "timing": self.timing.to_dict(),
        }


def encode_successes(
    job_ids: Sequence[str],
    model: str,
    variant: str,
    version: str,
    outputs: Mapping[str, np.ndarray],
    timing: Timing,
) -> list[bytes]:
    """The SUCCESS status record of each job of a batch that shares ``timing`` (row ``i`` of
    each output is ``job_ids[i]``'s): byte for byte what ``StatusRecord.success(jid,
    Result(...).to_wire()).encode()`` writes, but from one template per batch (one JSON
    encode, then per job only its id and its outputs' base64 are filled in).

    Ids are job ids (letters, digits, ``-``) and base64 needs no JSON escaping.
    """
    names = list(outputs)
    rows = {k: contiguous(v) for k, v in outputs.items()}
    marks = [f"@@inferq-output-{i}@@" for i in range(len(names))]
    doc = {
        "v": VERSION,
        "model": model,
        "variant": variant,
        "version": version,
        "outputs": {
            k: {"dtype": rows[k].dtype.name, "shape": list(rows[k].shape[1:]), "b64": mark}
            for k, mark in zip(names, marks, strict=True)
        },
        "timing": timing.to_dict(),
    }
    template = StatusRecord.success("@@inferq-job-id@@", doc).encode()
    head, rest = template.split(b"@@inferq-job-id@@")
    pieces = [rest]
    for mark in reversed(marks):  # outputs come before the job id in the record
        before, after = head.split(mark.encode())
        head = before
        pieces.insert(0, after)
    # pieces: [after output 0, ..., after output n-1 (= before the id), after the id]
    raws = [memoryview(rows[k].tobytes()) for k in names]
    sizes = [rows[k][0].nbytes if len(rows[k]) else 0 for k in names]
    b64 = binascii.b2a_base64  # base64.b64encode's own call, without its wrapper
    join = b"".join
    if len(names) == 1:  # one output (most models): one tuple joined per job
        (raw,), (size,), (after, tail) = raws, sizes, pieces
        return [
            join((head, b64(raw[i * size : (i + 1) * size], newline=False), after, jid.encode(), tail))
            for i, jid in enumerate(job_ids)
        ]
    out = []
    for i, jid in enumerate(job_ids):
        parts = [head]
        for raw, size, after in zip(raws, sizes, pieces, strict=False):
            parts.append(b64(raw[i * size : (i + 1) * size], newline=False))
            parts.append(after)
        parts.append(jid.encode())
        parts.append(pieces[-1])
        out.append(join(parts))
    return out


_CACHEABLE = frozenset(cacheable_types())

#: Celery states after which nothing more happens to a job.
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """A job's state in the result backend: Celery's result document, plus ``v``.

    The one reader of that document (``parse``); ``tasks/lua/status_record.lua`` reads
    the same fields in Redis for the cache check, and a test holds the two to agreeing.
    """

    job_id: str
    state: str  # Celery's: STARTED, SUCCESS, FAILURE, REVOKED, ...
    result: dict[str, Any] | None = None  # the ``Result`` document, on SUCCESS
    error_type: str = ""
    error_message: str = ""
    version: int = VERSION

    # -- writing (workers) --

    @classmethod
    def success(cls, job_id: str, result: dict[str, Any]) -> StatusRecord:
        return cls(job_id, "SUCCESS", result=result)

    @classmethod
    def failure(cls, job_id: str, error: InferqError) -> StatusRecord:
        return cls(job_id, "FAILURE", error_type=type(error).__name__, error_message=error.message)

    @classmethod
    def started(cls, job_id: str) -> StatusRecord:
        return cls(job_id, "STARTED")

    @classmethod
    def cancelled(cls, job_id: str) -> StatusRecord:
        """Celery's REVOKED state, with ``JobCancelled`` as its error (``Client.cancel``)."""
        return cls(
            job_id,
            "REVOKED",
            error_type="JobCancelled",
            error_message=f"job {job_id} was cancelled before a worker started it",
        )

    def encode(self) -> bytes:
        """Exactly what Celery's Redis backend would store (so any Celery client can poll
        it with ``AsyncResult``), plus ``v``; errors as Celery's JSON backends record
        them, never pickled."""
        if self.state == "FAILURE" or (self.state == "REVOKED" and self.error_type):
            result: Any = {
                "exc_type": self.error_type,
                "exc_message": [self.error_message],
                "exc_module": "tasks.errors",
            }
        else:
            result = self.result
        return orjson.dumps(
            {
                "status": self.state,
                "result": result,
                "traceback": None,
                "children": [],
                "date_done": datetime.now(UTC).isoformat() if self.state in READY_STATES else None,
                "task_id": self.job_id,
                "v": self.version,
            }
        )

    # -- reading (producers) --

    @classmethod
    def parse(cls, raw: bytes | str | None, job_id: str = "") -> StatusRecord | None:
        """The record stored (or published) for a job; None when there is none, or it is not
        a status record at all (not JSON, not a map)."""
        if raw is None:
            return None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(doc, dict):
            return None
        state = doc.get("status")
        version = doc.get("v", VERSION)
        jid = job_id or str(doc.get("task_id") or "")
        if isinstance(version, bool) or not isinstance(version, (int, float)) or version != VERSION:
            # A writer newer (or stranger) than this reader: the job is over as far as
            # this reader can tell, and its error says why.
            return cls(
                jid,
                "FAILURE",
                error_type="IncompatibleVersion",
                error_message=(
                    f"job {jid}: its status record is in wire version {show(version)}; "
                    f"this client reads version {VERSION} (upgrade the client)"
                ),
                version=-1,
            )
        if not isinstance(state, str):
            return None
        result = doc.get("result")
        if state == "FAILURE":
            exc = result if isinstance(result, dict) else {}
            err = error_from_wire(str(exc.get("exc_type", "InferqError")), exc.get("exc_message", ""))
            return cls(jid, state, error_type=type(err).__name__, error_message=err.message)
        if state == "REVOKED" and isinstance(result, dict) and result.get("exc_type") == "JobCancelled":
            return cls.cancelled(jid)
        return cls(jid, state, result=result if isinstance(result, dict) else None)

    @property
    def foreign(self) -> bool:
        """Written in a wire version this reader does not know (by a newer inferq): never
        to be deleted, redone or served, only reported (``IncompatibleVersion``)."""
        return self.version != VERSION

    @property
    def ready(self) -> bool:
        """Nothing more will happen to this job: wake its waiters."""
        return self.state in READY_STATES

    @property
    def cacheable(self) -> bool:
        """May be served as a cache hit: a result, or a failure caused by the input itself."""
        if self.version != VERSION:
            return False
        if self.state == "SUCCESS":
            return self.result is not None and "outputs" in self.result
        return self.state == "FAILURE" and self.error_type in _CACHEABLE

    def job_status(self) -> JobStatus:
        if self.state == "SUCCESS":
            return JobStatus.SUCCESS
        if self.state == "FAILURE":
            return JobStatus.EXPIRED if self.error_type == "Expired" else JobStatus.FAILURE
        if self.state == "REVOKED":
            return JobStatus.CANCELLED if self.error_type == "JobCancelled" else JobStatus.EXPIRED
        if self.state in ("STARTED", "RETRY"):
            return JobStatus.RUNNING
        return JobStatus.QUEUED

    def error(self) -> InferqError:
        """The error this record holds (for a FAILURE or REVOKED record)."""
        if self.state == "REVOKED" and self.error_type == "JobCancelled":
            return JobCancelled(self.error_message)
        if self.state == "REVOKED":
            return Expired(f"job {self.job_id} expired before it ran")
        if self.state == "FAILURE":
            return error_from_wire(self.error_type, self.error_message)
        if self.state == "SUCCESS":
            return InferqError(f"job {self.job_id}: the stored result is not an inferq result")
        return InferqError(f"job {self.job_id} is not finished (state {self.state})")

    def to_result(self, *, cached: bool) -> Result:
        """The job's ``Result``, or the error it records, raised."""
        if self.state == "SUCCESS" and self.result is not None and "outputs" in self.result:
            return Result.from_wire(self.job_id, self.result, cached=cached)
        raise self.error()
