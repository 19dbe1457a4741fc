"""Jobs, producer -> worker: the task argument of one job (``Request``) or of many
(``BulkMessage``: one input per item; ``BulkTensor``: the inputs stacked, one array per
input name)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.errors import BadInput, IncompatibleVersion, InferqError
from tasks.wire.version import VERSION, show


@dataclass
class Request:
    """One job: the single argument of the ``inferq.predict`` task.

    ``inputs`` is msgpack bytes from our client, a JSON mapping from other clients, or
    absent when the input travelled beside the message (``inputs_ref``).
    """

    model: str
    variant: str
    inputs: Any = None
    version: str | None = None
    enqueued_at: float = field(default_factory=time.time)
    cache: bool = True
    deadline_at: float | None = None  # unix time after which the job is not computed
    inputs_ref: str | None = None

    def to_wire(self) -> dict[str, Any]:
        d = self._common()
        d.update(_inputs_fields(self.inputs, self.inputs_ref))
        return d

    def _common(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "model": self.model,
            "variant": self.variant,
            "version": self.version,
            "enqueued_at": self.enqueued_at,
            "cache": self.cache,
            "deadline_at": self.deadline_at,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Request:
        """Parse a task argument, naming what was expected when it is malformed."""
        if not isinstance(obj, dict):
            raise BadInput(
                f"job argument must be a map with model, variant and inputs, got {type(obj).__name__}"
            )
        _check_version(obj, "job")
        missing = [k for k in ("model", "variant") if k not in obj]
        if "inputs" not in obj and "inputs_ref" not in obj:
            missing.append("inputs")
        if missing:
            raise BadInput(f"job is missing field(s) {missing}; expected model, variant and inputs")
        for k in ("model", "variant"):
            if not isinstance(obj[k], str):
                raise BadInput(f"job field {k!r} must be a string, got {type(obj[k]).__name__}")
        enqueued_at = _stamp(obj, "enqueued_at")
        version = obj.get("version")
        ref = obj.get("inputs_ref")
        return cls(
            model=obj["model"],
            variant=obj["variant"],
            inputs=obj.get("inputs"),
            version=str(version) if version is not None else None,
            enqueued_at=time.time() if enqueued_at is None else enqueued_at,
            cache=bool(obj.get("cache", True)),
            deadline_at=_stamp(obj, "deadline_at"),
            inputs_ref=ref if isinstance(ref, str) else None,
        )


@dataclass(frozen=True)
class BulkItem:
    """One input of a bulk message: its job id, and its input inline or beside the message."""

    id: str
    inputs: bytes | None = None
    inputs_ref: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, **_inputs_fields(self.inputs, self.inputs_ref)}


@dataclass
class BulkMessage:
    """Many jobs of one model variant in one message: shared fields once, then ``items``.

    Each item keeps its own job id (and so its own cache entry and status record).
    """

    common: Request
    items: list[BulkItem]

    def to_wire(self) -> dict[str, Any]:
        return {**self.common._common(), "items": [it.to_wire() for it in self.items]}

    @staticmethod
    def is_bulk(obj: Any) -> bool:
        return isinstance(obj, dict) and "items" in obj

    @staticmethod
    def split(obj: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[int]]:
        """The per-job task arguments of a bulk message, and the positions of items without a
        usable id.

        An item without a usable id is skipped (nobody can be waiting on it), so it
        cannot keep its siblings from running. Raises ``BadInput`` when ``items`` is
        not a non-empty list or no item is usable. The per-job arguments are parsed
        later, one job at a time, by ``Request.from_wire``.
        """
        # No version check here: each item is parsed by ``Request.from_wire`` and answered
        # alone (under its own id, which a waiter watches), also when the version is off.
        items = obj["items"]
        if not isinstance(items, list) or not items:
            raise BadInput("bulk job 'items' must be a non-empty list of {id, inputs}")
        common = {k: v for k, v in obj.items() if k != "items"}
        out: list[tuple[str, dict[str, Any]]] = []
        skipped: list[int] = []
        for i, it in enumerate(items):
            jid = it.get("id") if isinstance(it, dict) else None
            if not (isinstance(jid, str) and is_item_id(jid)):
                skipped.append(i)
                continue
            assert isinstance(it, dict)
            own = {k: it[k] for k in ("inputs", "inputs_ref") if k in it}
            out.append((jid, {**common, **own}))
        if not out:
            raise BadInput("every bulk item needs an 'id' of letters, digits and '-' (at most 64)")
        return out, skipped


#: The version of the bulk tensor form. A separate number from the other forms' ``VERSION``:
#: an inferq worker that predates this form splits such a message by its ``items`` and
#: answers each item ``IncompatibleVersion`` naming both versions, as for any job of
#: another version, instead of misreading it.
TENSOR_VERSION = 2


@dataclass
class BulkTensor:
    """Many jobs of one model variant whose inputs travel as one stacked array per input
    name (row ``i`` is the input of ``ids[i]``): one decode, one check and one model call
    for all, where a ``BulkMessage`` costs one of each per item.

    On the wire (version ``TENSOR_VERSION``): the shared fields of ``Request``, ``items``
    (``[{"id": ...}]``, in row order: each job keeps its own id, cache entry and status
    record, and a worker of another version answers each one), and ``tensors``:
    ``{name: {dtype, shape, data | ref}}``, ``shape[0]`` the number of items, ``data``
    the raw C-order bytes, or ``ref`` the key those bytes wait under beside the message
    (raw too: neither base64 in kombu's JSON nor a msgpack copy).
    """

    common: Request
    ids: list[str]
    tensors: Any = None  # name -> {dtype, shape, data | ref}
    #: The rows with a usable id, when some were skipped (``from_wire``); None: every row.
    rows: list[int] | None = None
    #: How many rows the tensors hold (every item, usable or not); 0: ``len(ids)``.
    count: int = 0
    #: Why the shared fields are unusable (``from_wire``): every item is answered with it.
    error: InferqError | None = None

    def to_wire(self) -> dict[str, Any]:
        d = self.common._common()
        d["v"] = TENSOR_VERSION
        d["items"] = [{"id": jid} for jid in self.ids]
        d["tensors"] = self.tensors
        return d

    @staticmethod
    def is_tensor_bulk(obj: Any) -> bool:
        """A bulk message in this form's version (another version is split per item)."""
        return (
            isinstance(obj, dict)
            and "items" in obj
            and "tensors" in obj
            and obj.get("v") == TENSOR_VERSION
            and not isinstance(obj.get("v"), bool)
        )

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> tuple[BulkTensor, list[int]]:
        """The message and the positions of items without a usable id (skipped: nobody
        waits on them). Raises ``BadInput`` when no item is usable; malformed shared
        fields are kept as ``error``, for each item to be answered with; the tensors are
        checked by the worker's decode (``tasks/codec.py``'s ``decode_stacked``)."""
        items = obj["items"]
        if not isinstance(items, list) or not items:
            raise BadInput("bulk job 'items' must be a non-empty list of {id}")
        ids: list[str] = []
        rows: list[int] = []
        skipped: list[int] = []
        for i, it in enumerate(items):
            jid = it.get("id") if isinstance(it, dict) else None
            if isinstance(jid, str) and is_item_id(jid):
                ids.append(jid)
                rows.append(i)
            else:
                skipped.append(i)
        if not ids:
            raise BadInput("every bulk item needs an 'id' of letters, digits and '-' (at most 64)")
        shared = {k: v for k, v in obj.items() if k not in _TENSOR_FIELDS}
        error = None
        try:
            common = Request.from_wire(shared | {"v": VERSION, "inputs": None})
        except BadInput as exc:
            common, error = Request("", ""), exc
        return (
            cls(
                common,
                ids,
                tensors=obj.get("tensors"),
                rows=rows if skipped else None,
                count=len(items),
                error=error,
            ),
            skipped,
        )

    @property
    def rows_sent(self) -> int:
        """How many rows the tensors hold (every item, usable or not)."""
        return self.count or len(self.ids)


_TENSOR_FIELDS = ("items", "tensors")

_ITEM_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")


def is_item_id(jid: str) -> bool:
    """A bulk item's id: letters, digits and '-', at most 64 (a job id, never a key pattern)."""
    return _ITEM_ID.fullmatch(jid) is not None


def _inputs_fields(inputs: Any, ref: str | None) -> dict[str, Any]:
    return {"inputs_ref": ref} if ref is not None else {"inputs": inputs}


def _check_version(obj: Mapping[str, Any], what: str) -> None:
    # Not BadInput: that is cached under the job's id, and the same input sent again
    # by an upgraded client must run, not meet this answer for a day.
    if obj.get("v", VERSION) != VERSION:
        raise IncompatibleVersion(
            f"{what} wire version must be {VERSION}, got {show(obj.get('v'))} "
            "(the producer and the worker run inferq versions that do not match)"
        )


def _stamp(obj: Mapping[str, Any], name: str) -> float | None:
    """A unix-time field as a float; absent or not a number is None."""
    value = obj.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # a JSON integer too big for a float
        raise BadInput(
            f"job field {name!r} must be a unix time in seconds, got an integer too large"
        ) from None
