"""A record kept as it was heard reads exactly as a parsed one would (``producers/heard.py``):
``wait_all`` builds its ``Result``s straight from a reply batch's text, so any difference
from ``StatusRecord.parse`` + ``result_of`` (errors, versions, timing) would be a
behaviour change only bulk callers see. Also the bookkeeping that bounds what is kept,
and the sync listener's ``Flag``."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from producers.heard import (
    PARSED_SIZE,
    ArrivalStore,
    final_raw,
    record_of,
    result_from,
    result_of,
    size_of,
)
from tasks.errors import BadInput, IncompatibleVersion, InferqError, JobCancelled
from tasks.schema import Timing
from tasks.wire import ReplyBatch, StatusRecord
from tasks.wire.results import encode_successes

TIMING = Timing.build(
    enqueued_at=100.0,
    received_at=100.5,
    started_at=100.6,
    compute_done_at=100.7,
    finished_at=100.8,
    batch_size=2,
)
IDS = ["a" * 32, "b" * 32]


def successes() -> list[bytes]:
    outputs = {"probs": np.arange(20, dtype=np.float32).reshape(2, 10), "top": np.array([[3], [4]], np.int64)}
    return encode_successes(IDS, "digits", "fp32", "7", outputs, TIMING)


def as_batch_text(raws: list[bytes]) -> list[bytes | str]:
    """The records as a ``ReplyBatch`` hands them over (msgpack decodes Lua's strings as str)."""
    batch = ReplyBatch.decode(ReplyBatch(IDS, [r.decode() for r in raws]).encode())
    return batch.records


def outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except InferqError as exc:
        return exc


def same(a: object, b: object) -> None:
    if isinstance(a, Exception):
        assert type(a) is type(b) and str(a) == str(b)
        return
    assert a.job_id == b.job_id and a.model == b.model and a.variant == b.variant  # type: ignore[attr-defined]
    assert a.version == b.version and a.cached == b.cached and a.timing == b.timing  # type: ignore[attr-defined]
    assert a.outputs.keys() == b.outputs.keys()  # type: ignore[attr-defined]
    for k in a.outputs:  # type: ignore[attr-defined]
        x, y = a.outputs[k], b.outputs[k]  # type: ignore[attr-defined]
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


@pytest.mark.parametrize("text", [False, True], ids=["bytes", "reply-batch-text"])
def test_a_success_heard_as_text_reads_as_the_parsed_record_does(text: bool) -> None:
    raws = successes()
    heard = as_batch_text(raws) if text else raws
    for jid, raw, h in zip(IDS, raws, heard, strict=True):
        assert final_raw(h) is h, "a worker's success is kept as it came"
        fast = result_from(h, jid, False, 100.0, 101.25)
        slow = result_of(StatusRecord.parse(raw, jid), False, 100.0, 101.25)  # type: ignore[arg-type]
        same(fast, slow)
        assert fast.timing.end_to_end_ms == pytest.approx(1250.0)


def record(doc: dict[str, object]) -> bytes:
    return orjson.dumps(doc)


def odd_records() -> list[bytes]:
    """Records the fast path must hand to the parser: each must read exactly as parsed."""
    good = orjson.loads(successes()[0])
    newer_record = {**good, "v": 2}
    newer_result = {**good, "result": {**good["result"], "v": 2}}
    float_version = {**good, "v": 1.0}
    return [
        StatusRecord.failure(IDS[0], BadInput("pixel out of range")).encode(),
        StatusRecord.cancelled(IDS[0]).encode(),
        StatusRecord(IDS[0], "REVOKED").encode(),
        StatusRecord.success(IDS[0], {"not": "a result"}).encode(),
        record(newer_record),
        record(newer_result),
        record(float_version),
    ]


@pytest.mark.parametrize("raw", odd_records(), ids=lambda r: r[:40].decode(errors="replace"))
def test_failures_cancels_and_other_versions_heard_as_text_read_as_parsed(raw: bytes) -> None:
    assert final_raw(raw) is raw
    fast = outcome(result_from, raw.decode(), IDS[0], False, 100.0, 101.0)
    slow = outcome(result_of, StatusRecord.parse(raw, IDS[0]), False, 100.0, 101.0)
    same(fast, slow)
    assert record_of(raw.decode(), IDS[0]) == StatusRecord.parse(raw, IDS[0])


def test_the_errors_a_bulk_caller_gets_back_are_the_records_own() -> None:
    bad = StatusRecord.failure(IDS[0], BadInput("pixel out of range")).encode()
    with pytest.raises(BadInput, match="pixel out of range"):
        result_from(bad, IDS[0], False, 0.0, 1.0)
    with pytest.raises(JobCancelled):
        result_from(StatusRecord.cancelled(IDS[0]).encode(), IDS[0], False, 0.0, 1.0)
    newer = record({**orjson.loads(successes()[0]), "v": 9})
    with pytest.raises(IncompatibleVersion):
        result_from(newer, IDS[0], False, 0.0, 1.0)


def test_a_record_not_yet_final_is_parsed_not_kept_as_text() -> None:
    """``STARTED`` (or anything not a final state) must be parsed: it must not wake a waiter."""
    assert final_raw(StatusRecord.started(IDS[0]).encode()) is None
    assert final_raw(StatusRecord.started(IDS[0]).encode().decode()) is None
    assert final_raw(None) is None and final_raw(b"not json") is None


def test_a_final_looking_record_that_does_not_parse_is_a_failure_not_a_running_job() -> None:
    broken = '{"status":"SUCCESS", broken'
    assert final_raw(broken) is broken
    rec = record_of(broken, IDS[0])
    assert rec.ready and rec.state == "FAILURE"
    with pytest.raises(InferqError):
        result_from(broken, IDS[0], False, 0.0, 1.0)


def test_the_arrival_store_counts_the_bytes_it_holds() -> None:
    store = ArrivalStore()
    raws = successes()
    store["a"] = (raws[0], 1.0)
    store["b"] = (raws[1].decode(), 1.0)
    store["c"] = (StatusRecord.started("c"), 1.0)
    assert store.nbytes == len(raws[0]) + len(raws[1]) + PARSED_SIZE
    store["a"] = (raws[1], 2.0)  # replaced: the old one's bytes go
    assert store.nbytes == 2 * len(raws[1]) + PARSED_SIZE
    del store["b"]
    assert store.pop("c")[1] == 1.0 and store.pop("missing", None) is None
    assert store.nbytes == size_of(raws[1])
    assert store.over(0, 10**9) and store.over(10, 10) and not store.over(1, len(raws[1]))
    store["d"] = (raws[0], 3.0)
    assert store.excess(1, 10**9, keep=()) == ["a"], "the oldest first"
    assert store.excess(1, 10**9, keep={"a"}) == ["d"], "never one somebody waits on"
    assert store.excess(10, len(raws[0]), keep=()) == ["a"], "bytes bound too"
    del store["d"]
    store.clear()
    assert store.nbytes == 0 and not store


def test_a_held_row_is_counted_near_what_it_really_holds_and_bytes_bind_before_the_count() -> None:
    """The listener's bound on results nobody waits for yet is in bytes (``ROW_SIZE`` plus
    a row's outputs): it must be near what holding a row really costs, and for a small
    model's rows it, not ``KEEP_ARRIVED_MAX``, must bind (a count bound of 65,536 evicted
    most of a 120,000-input bulk submission's results before its wait began)."""
    import time
    import tracemalloc
    import uuid

    from producers.heard import ArrivalStore, batch_items
    from producers.listener import ResultListener
    from tasks.wire import encode_columns

    now = time.time()
    timing = Timing.build(
        enqueued_at=now, received_at=now, started_at=now, compute_done_at=now, finished_at=now, batch_size=64
    )
    blobs = []
    for _ in range(160):  # 10,240 rows, 10 float32 outputs each (the digits model's)
        ids = [uuid.uuid4().hex * 2 for _ in range(64)]
        outputs = {"probs": np.random.default_rng(0).random((64, 10), dtype=np.float32)}
        blobs.append(encode_columns("digits", "fp32", "1", [(ids, outputs, timing)]))
    tracemalloc.start()
    try:
        store = ArrivalStore()
        for blob in blobs:
            for jid, row in batch_items(ReplyBatch.decode(blob)):
                store[jid] = (row, now)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_row, counted = held / len(store), store.nbytes / len(store)
    assert 0.7 * per_row <= counted <= 1.3 * per_row, f"{per_row:.0f} B held per row, {counted:.0f} counted"
    rows_by_bytes = ResultListener.KEEP_ARRIVED_BYTES / counted
    assert rows_by_bytes < ResultListener.KEEP_ARRIVED_MAX, "the count, not the bytes, bounds small rows"


def test_rows_added_together_count_their_bytes_and_take_kept_arrival_times() -> None:
    """``ArrivalStore.add_rows`` (the listener's hand-over of a reply block's rows) must
    leave the store as ``[jid] = (row, at)`` one by one would: the same bytes counted,
    an arrival time kept for an id (its result evicted earlier) used and let go, and a
    row replacing a held record counted once."""
    from producers.heard import ROW_SIZE, ArrivalStore, Row, batch_items, size_of
    from tasks.wire import encode_columns

    timing = Timing.build(
        enqueued_at=1.0, received_at=1.0, started_at=1.0, compute_done_at=1.0, finished_at=1.0, batch_size=3
    )
    outputs = {"probs": np.zeros((3, 10), np.float32)}
    batch = ReplyBatch.decode(encode_columns("digits", "fp32", "1", [(["a", "b", "c"], outputs, timing)]))
    rows = [(jid, row) for jid, row in batch_items(batch) if isinstance(row, Row)]

    one_by_one = ArrivalStore()
    one_by_one["c"] = (b'{"status":"SUCCESS"}', 5.0)
    together = ArrivalStore()
    together["c"] = (b'{"status":"SUCCESS"}', 5.0)
    times = {"b": 4.0}
    for jid, row in rows:
        one_by_one[jid] = (row, {"b": 4.0}.get(jid, 9.0))
    together.add_rows(rows, times, 9.0)

    assert dict(together) == dict(one_by_one)
    assert together["b"][1] == 4.0 and together["a"][1] == 9.0 and times == {}
    assert together.nbytes == one_by_one.nbytes == sum(size_of(h) for h, _ in together.values())
    assert together.nbytes == 3 * (ROW_SIZE + 40)
