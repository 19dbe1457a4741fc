"""What a result listener heard for a job, kept as it came until someone reads it.

A worker's records reach a client in ``ReplyBatch``es, hundreds at a time in bulk. The
listener used to parse each one on its thread (a ``StatusRecord``), and ``wait_all``
then turned it into a ``Result`` (``to_result``, ``Timing.from_dict``, one array per
output): two passes over each record, ~14 µs of the client's GIL per input. Now a
record that says it is final (its first bytes, as every writer orders them) is kept as
the bytes that came, and read once, when the caller takes it: ``result_from`` builds the
``Result`` straight from the JSON for a current worker's success (one ``orjson.loads``)
and falls back to ``StatusRecord.parse`` + ``result_of`` for anything else, so errors,
versions and cache hits read exactly as before.

``ArrivalStore`` holds what arrived and nobody read yet, bounded by count and by bytes
(a bulk submission's results arrive while it is still sending; held as bytes, 30,000
digits results are ~20 MB, so they need not be dropped and read again from Redis).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import Any

import numpy as np
import orjson

from tasks.codec import array_from_json
from tasks.schema import Timing
from tasks.wire import ReplyBatch, ReplyBlock, Result, StatusRecord
from tasks.wire.version import VERSION


class Row:
    """A job's success heard in a version 2 reply batch: row ``index`` of ``block``."""

    __slots__ = ("block", "index")

    def __init__(self, block: ReplyBlock, index: int) -> None:
        self.block = block
        self.index = index

    def result(self, job_id: str) -> Result:
        """The job's ``Result``, as ``Result.from_wire`` of its status record reads it
        (``end_to_end_ms`` not set): read-only arrays, views of the block's rows, or
        copies of them for rows of ``OWN_ROW_BYTES`` or more."""
        b, i = self.block, self.index
        if b.row_bytes < OWN_ROW_BYTES:
            outputs = {k: a[i] for k, a in b.outputs.items()}
        else:
            outputs = {k: _own(a[i]) for k, a in b.outputs.items()}
        return Result(job_id, b.model, b.variant, b.version, outputs, Timing.from_dict(b.timing), False)


#: A ``Row`` result of this many bytes or more gets its own copy of its arrays: a view
#: would keep its whole block (up to a batch of rows) alive while the caller holds any
#: one result of it. Below it, the block is a few KB and a copy costs more than it saves.
OWN_ROW_BYTES = 16 * 1024


def _own(row: np.ndarray) -> np.ndarray:
    out = row.copy()
    out.flags.writeable = False  # as a record's arrays (``np.frombuffer`` of bytes) are
    return out


#: A record as heard: parsed, the text of one that says it is final (``str`` as a
#: ``ReplyBatch`` decodes it, ``bytes`` as a key or channel gives it), or a ``Row``.
Heard = StatusRecord | bytes | str | Row
#: (what was heard, unix time it was seen).
HeardArrival = tuple[Heard, float]

#: The first bytes of a final record as ``StatusRecord.encode`` (and so every worker and
#: ``encode_successes``) writes it: ``status`` is its first key.
_FINAL_TEXT = ('{"status":"SUCCESS"', '{"status":"FAILURE"', '{"status":"REVOKED"')
_FINAL = tuple(p.encode() for p in _FINAL_TEXT)
#: What a parsed record is counted as against ``ArrivalStore``'s byte bound; a ``Row``,
#: its outputs' bytes and this: what holding one costs besides its outputs (its id, the
#: ``Row``, the arrival's tuple and its entry, its share of the block's names and
#: timing), 345 bytes traced per row with 40 bytes of outputs (``tracemalloc``, 100,000
#: rows of 64-row blocks).
PARSED_SIZE = 4096
ROW_SIZE = 304


def final_raw(raw: Any) -> bytes | str | None:
    """``raw`` if it is the text of a final record (kept unparsed), else None (parse it)."""
    if raw.__class__ is str:
        return raw if raw.startswith(_FINAL_TEXT) else None
    return raw if isinstance(raw, bytes) and raw.startswith(_FINAL) else None


def batch_items(batch: ReplyBatch) -> Iterator[tuple[str, bytes | str | Row]]:
    """Each job of a readable reply batch with what was heard for it: its record
    (version 1) or its ``Row`` (version 2)."""
    for block in batch.blocks:
        for i, jid in enumerate(block.ids):
            yield jid, Row(block, i)
    yield from batch_records(batch)


def batch_records(batch: ReplyBatch) -> Iterator[tuple[str, bytes | str]]:
    """The jobs of a readable reply batch answered by their records, not in a block (all
    of a version 1 batch's)."""
    n = sum(len(block.ids) for block in batch.blocks)
    return zip(batch.ids[n:] if n else batch.ids, batch.records, strict=True)


def record_of(heard: Heard, job_id: str) -> StatusRecord:
    """The parsed record of what was heard (a final record's bytes that do not parse read
    as a failure, never as a job still running)."""
    if isinstance(heard, StatusRecord):
        return heard
    if isinstance(heard, Row):
        return StatusRecord.success(job_id, heard.result(job_id).to_wire())
    record = StatusRecord.parse(heard, job_id)
    if record is None:
        return StatusRecord(
            job_id, "FAILURE", error_type="InferqError", error_message="unreadable status record"
        )
    return record


def size_of(heard: Heard) -> int:
    if isinstance(heard, Row):
        return ROW_SIZE + heard.block.row_bytes
    return PARSED_SIZE if isinstance(heard, StatusRecord) else len(heard)


def result_of(record: StatusRecord, cached: bool, asked_at: float, answered_at: float) -> Result:
    """A ready record as the caller's ``Result`` (or its error, raised).

    ``cached`` means served from the cache for this caller's request: no worker computed
    it for that submission. Such a result carries its own timing (the hit's end to end),
    the computing job's kept as ``timing.computed``.
    """
    result = record.to_result(cached=cached)
    if cached:
        result.timing = result.timing.served_from_cache(asked_at, answered_at)
    else:
        result.timing.end_to_end_ms = (answered_at - asked_at) * 1e3
    return result


def result_from(heard: Heard, job_id: str, cached: bool, asked_at: float, answered_at: float) -> Result:
    """``result_of(record_of(heard), ...)``, the same ``Result`` (or error raised), with one
    JSON read and no ``StatusRecord`` for a current worker's success, and none at all
    for a ``Row``."""
    if isinstance(heard, Row):
        if not cached:
            result = heard.result(job_id)
            result.timing.end_to_end_ms = (answered_at - asked_at) * 1e3
            return result
    elif not cached and not isinstance(heard, StatusRecord):
        try:
            doc = orjson.loads(heard)
        except orjson.JSONDecodeError:
            doc = None
        res = doc.get("result") if doc.__class__ is dict and doc.get("status") == "SUCCESS" else None
        v = doc.get("v", VERSION) if res is not None else None
        if res.__class__ is dict and v.__class__ is int and v == VERSION:
            w = res.get("v", VERSION)
            outputs = res.get("outputs")
            if w.__class__ is int and w == VERSION and outputs.__class__ is dict:
                timing = Timing.from_dict(res["timing"])
                timing.end_to_end_ms = (answered_at - asked_at) * 1e3
                return Result(
                    job_id,
                    res["model"],
                    res["variant"],
                    str(res["version"]),
                    {k: array_from_json(a) for k, a in outputs.items()},
                    timing,
                    False,
                )
    return result_of(record_of(heard, job_id), cached, asked_at, answered_at)


class ArrivalStore(dict[str, HeardArrival]):
    """Arrivals by job id, oldest first, with the bytes they hold (``nbytes``).

    Only ``[jid] = ...``, ``add_rows``, ``del``, ``pop`` and ``clear`` change it (the
    listener uses no other way), and each keeps ``nbytes`` right.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def __setitem__(self, jid: str, value: HeardArrival) -> None:
        old = super().get(jid)
        if old is not None:
            self.nbytes -= size_of(old[0])
        super().__setitem__(jid, value)
        self.nbytes += size_of(value[0])

    def __delitem__(self, jid: str) -> None:
        self.nbytes -= size_of(super().pop(jid)[0])

    def pop(self, jid: str, *default: Any) -> Any:
        if jid not in self:
            return super().pop(jid, *default)
        value = super().pop(jid)
        self.nbytes -= size_of(value[0])
        return value

    def clear(self) -> None:
        super().clear()
        self.nbytes = 0

    def add_rows(self, rows: list[tuple[str, Row]], times: dict[str, float], now: float) -> None:
        """Rows of reply blocks arrived ``now`` for ids not held (``Flags.arrive`` said
        so), each with its arrival time kept in ``times`` if any (taken from it), else
        ``now``: ``[jid] = (row, at)`` each, without a method call and a size lookup per
        row (a bulk client hands over tens of thousands)."""
        put = super().__setitem__
        nbytes = 0
        for jid, row in rows:
            old = self.get(jid)
            if old is not None:  # (not arrived, yet held: a read of its key came first)
                self.nbytes -= size_of(old[0])
            put(jid, (row, times.pop(jid, 0.0) or now) if times else (row, now))
            nbytes += ROW_SIZE + row.block.row_bytes
        self.nbytes += nbytes

    def over(self, max_count: int, max_bytes: int) -> bool:
        return len(self) > max_count or self.nbytes > max_bytes

    def excess(self, max_count: int, max_bytes: int, keep: Container[str]) -> list[str]:
        """The oldest ids to drop (none of ``keep``: someone waits on them) to be back
        within ``max_count`` arrivals and ``max_bytes``."""
        sizes = ((jid, size_of(heard)) for jid, (heard, _) in self.items())
        return oldest_to_drop(sizes, len(self) - max_count, self.nbytes - max_bytes, keep)


def oldest_to_drop(
    sizes: Iterable[tuple[str, int]], count: int, nbytes: int, keep: Container[str]
) -> list[str]:
    """From ``sizes`` (id, bytes held; oldest first), the oldest ids whose dropping frees
    ``count`` entries and ``nbytes`` bytes, none of ``keep``. Both listeners bound what
    they hold with it (``ArrivalStore.excess``; the async listener's settled futures)."""
    out: list[str] = []
    for jid, size in sizes:
        if count <= 0 and nbytes <= 0:
            break
        if jid not in keep:
            out.append(jid)
            count -= 1
            nbytes -= size
    return out
