"""Results, worker -> producer: a computed ``Result``, inside the job's ``StatusRecord``;
a batch's records for one client, in one ``ReplyBatch`` (or, in its version 2, the
batch's blocks of jobs as columns: ``ReplyBlock``).

The status record is Celery's own result document (so ``AsyncResult`` reads it) plus
``v``; ``StatusRecord.parse`` is its one reader in Python, and
``tasks/lua/status_record.lua`` reads the same fields in Redis for the cache check.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack
import numpy as np
import orjson

from tasks.codec import array_from_json, array_to_json, contiguous
from tasks.constants import REPLY_CHANNEL_PREFIX
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
    raws = [rows[k].tobytes() for k in names]
    sizes = [rows[k][0].nbytes if len(rows[k]) else 0 for k in names]
    b64 = base64.b64encode
    out = []
    for i, jid in enumerate(job_ids):
        parts = [head]
        for raw, size, after in zip(raws, sizes, pieces, strict=False):
            parts.append(b64(raw[i * size : (i + 1) * size]))
            parts.append(after)
        parts.append(jid.encode())
        parts.append(pieces[-1])
        out.append(b"".join(parts))
    return out


_CACHEABLE = frozenset(cacheable_types())

#: Celery states after which nothing more happens to a job.
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


#: The version of the ``ReplyBatch`` form (its own ``v``, apart from the job forms'):
#: version 1 carries each job's status record; version 2 (``REPLY_COLUMNS_VERSION``)
#: carries a batch's successes as columns, for a client whose channel asks for them.
REPLY_VERSION = 1
REPLY_COLUMNS_VERSION = 2
#: A reply channel named ``REPLY_CHANNEL_PREFIX + REPLY_COLUMNS_MARK + <id>`` is read by
#: a client that reads version 2; any other inferq reply channel gets version 1 only (a
#: client from before version 2). Both start with ``REPLY_CHANNEL_PREFIX``, so a worker
#: from before version 2 still answers the newer client, in version 1.
REPLY_COLUMNS_MARK = "c2."


def reads_columns(channel: str) -> bool:
    """Whether the client of this reply channel reads version 2 (``ReplyBlock``s)."""
    return channel.startswith(REPLY_CHANNEL_PREFIX + REPLY_COLUMNS_MARK)


@dataclass(frozen=True, slots=True)
class ReplyBlock:
    """Jobs of one model call and one message, answered as columns: each output one array
    of all their rows (row ``i`` is ``ids[i]``'s), model, version and timing said once.

    Why: a client building 30,000 ``Result``s from status records parsed each one (JSON,
    base64, a ``Timing``): about a quarter of a bulk client's CPU. From a block, a result
    is a view of each output's row and a copy of one timing. Each job's status record is
    still stored (and published) under its own id, as in version 1: only the reply to
    the client that sent the jobs changes form.
    """

    ids: list[str]
    model: str
    variant: str
    version: str
    #: ``Timing.to_dict()`` of the jobs' shared timing (checked by ``decode``).
    timing: dict[str, Any]
    #: name -> array of shape ``(len(ids), *row shape)``, read-only.
    outputs: dict[str, np.ndarray]
    #: One row's bytes, all outputs, worked out once by ``decode`` (a listener counts
    #: what it holds by it, twice per result).
    row_bytes: int


def encode_columns(
    model: str,
    variant: str,
    version: str,
    blocks: Sequence[tuple[Sequence[str], Mapping[str, np.ndarray], Timing]],
    singles: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """A version 2 ``ReplyBatch``: per block of successes its ids, its outputs' rows (row
    ``i`` is ``ids[i]``'s) and the timing they share (raw C-order bytes, dtype by name, as
    ``array_to_json`` writes them, without base64); ``singles``, jobs answered by their
    status records as in version 1 (a block of one row costs its reader more than its
    record: the block's names, timing and checks are paid for one row)."""
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "v": REPLY_COLUMNS_VERSION,
            "ids": [jid for jid, _ in singles],
            "records": [record for _, record in singles],
            "blocks": [
                {
                    "ids": list(ids),
                    "model": model,
                    "variant": variant,
                    "version": version,
                    "timing": timing.to_dict(),
                    "outputs": {
                        k: {
                            "dtype": a.dtype.name,
                            "shape": list(a.shape[1:]),
                            "data": contiguous(a).tobytes(),
                        }
                        for k, a in outputs.items()
                    },
                }
                for ids, outputs, timing in blocks
            ],
        },
        use_bin_type=True,
    )


@dataclass(frozen=True, slots=True)
class ReplyBatch:
    """The records of one stored batch for one client, published on that client's reply
    channel (the message's ``reply_to``, ``inferq:reply:<client id>``) by ``store.lua``:
    one pub/sub message per batch and client instead of one per job.

    On the wire, msgpack, in one of two versions:

    - 1: ``{"v": 1, "ids": [id...], "records": [record...]}``, each record the bytes
      stored under ``celery-task-meta-<id>`` (``StatusRecord``);
    - 2 (``encode_columns``), for a channel that ``reads_columns``: ``{"v": 2, "blocks":
      [{ids, model, variant, version, timing, outputs}], "ids": [...], "records":
      [...]}``, each output ``{dtype, shape (of one row), data (every row's raw
      bytes)}``, and ``ids``/``records`` as in version 1 for jobs not in a block.

    Decoded, ``ids`` holds every job named (the blocks' first, in order), ``records``
    the records of the last ``len(records)`` of them.

    Each record is still stored and published under its own id too (other producers
    sharing a job, ``AsyncResult``, older clients). ``decode`` never raises: a batch in
    another version, or unreadable, comes back with no records or blocks (``readable``
    False) and the ids it names, if any, whose keys the reader then reads instead.
    """

    ids: list[str]
    records: list[bytes | str]
    version: int = REPLY_VERSION
    blocks: list[ReplyBlock] = field(default_factory=list)

    @property
    def readable(self) -> bool:
        return self.version in (REPLY_VERSION, REPLY_COLUMNS_VERSION)

    def encode(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {"v": self.version, "ids": self.ids, "records": self.records}, use_bin_type=True
        )

    @classmethod
    def decode(cls, data: bytes | str | None) -> ReplyBatch:
        try:
            doc = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else None
        except Exception:  # msgpack raises several kinds for bytes that are not its own
            doc = None
        if not isinstance(doc, dict):
            return cls([], [], -1)
        version = doc.get("v")
        if version == REPLY_COLUMNS_VERSION and not isinstance(version, bool):
            return cls._decode_columns(doc.get("blocks"), doc.get("ids"), doc.get("records"))
        ids = doc.get("ids")
        ids = [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
        records = doc.get("records")
        if (
            isinstance(version, bool)
            or version != REPLY_VERSION
            or not isinstance(records, list)
            or len(records) != len(ids)
        ):
            other = isinstance(version, int) and not isinstance(version, bool) and version != REPLY_VERSION
            return cls(ids, [], int(version) if other else -1)  # type: ignore[arg-type]  # -1: malformed
        return cls(ids, records)

    @classmethod
    def _decode_columns(cls, raw: Any, singles: Any, records: Any) -> ReplyBatch:
        """Version 2's blocks, each checked whole (ids, names, timing, every output's dtype
        and byte count), and its records; a batch with anything wrong is unreadable, with
        the ids it names."""
        blocks: list[ReplyBlock] = []
        named: list[str] = []
        ok = (
            isinstance(raw, list)
            and isinstance(singles, list)
            and isinstance(records, list)
            and len(singles) == len(records)
            and all(isinstance(i, str) for i in singles)
        )
        for b in raw if isinstance(raw, list) else ():
            block = _read_block(b) if isinstance(b, dict) else None
            if block is None:
                ok = False
                ids = b.get("ids") if isinstance(b, dict) else None
                named += [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
            else:
                blocks.append(block)
                named += block.ids
        if isinstance(singles, list):
            named += [i for i in singles if isinstance(i, str)]
        if not ok:
            return cls(named, [], -1)
        return cls(named, records, REPLY_COLUMNS_VERSION, blocks)


def _read_block(b: dict[str, Any]) -> ReplyBlock | None:
    """One version 2 block, or None if any part of it is not what ``encode_columns`` writes."""
    ids, outputs, timing = b.get("ids"), b.get("outputs"), b.get("timing")
    names = [b.get("model"), b.get("variant"), b.get("version")]
    if not (
        isinstance(ids, list)
        and ids
        and all(isinstance(i, str) for i in ids)
        and all(isinstance(n, str) for n in names)
        and isinstance(outputs, dict)
        and isinstance(timing, dict)
    ):
        return None
    try:
        Timing.from_dict(timing)  # as every row will read it
    except (TypeError, ValueError):
        return None
    arrays: dict[str, np.ndarray] = {}
    for name, out in outputs.items():
        arr = _read_column(out, len(ids)) if isinstance(name, str) and isinstance(out, dict) else None
        if arr is None:
            return None
        arrays[name] = arr
    row_bytes = sum(a.nbytes for a in arrays.values()) // len(ids)
    return ReplyBlock(ids, names[0], names[1], names[2], timing, arrays, row_bytes)  # type: ignore[arg-type]


def _read_column(out: dict[str, Any], rows: int) -> np.ndarray | None:
    """One output's rows: numbers only (never objects), exactly the bytes the shape needs."""
    dtype, shape, data = out.get("dtype"), out.get("shape"), out.get("data")
    if not (
        isinstance(dtype, str)
        and isinstance(data, bytes)
        and isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
    ):
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    if dt.hasobject or dt.kind not in "biufc":
        return None
    if len(data) != rows * int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
        return None
    return np.frombuffer(data, dtype=dt).reshape(rows, *shape)


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
