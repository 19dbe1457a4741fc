"""Replies, worker -> one producer: a batch's records for one client, in one
``ReplyBatch`` on the client's reply channel (or, in its version 2, the batch's blocks of
jobs as columns: ``ReplyBlock``). Each job's record is also stored under its own key
(``tasks/wire/results.py``, ``StatusRecord``): the reply is how its client hears it
within a round trip, one message per batch rather than one per job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from tasks.codec import contiguous
from tasks.constants import REPLY_CHANNEL_PREFIX
from tasks.schema import Timing

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
