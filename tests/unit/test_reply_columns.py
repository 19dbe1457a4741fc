"""Version 2 reply batches (``encode_columns``, ``ReplyBatch.decode``, ``heard.Row``): a
batch's successes as columns read back as the same ``Result``s their status records
give, and anything malformed is refused whole, naming its ids, never misread."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import pytest

from producers.heard import ROW_SIZE, Row, batch_items, record_of, result_from, size_of
from tasks.errors import BadInput
from tasks.schema import Timing
from tasks.wire import (
    REPLY_COLUMNS_VERSION,
    ReplyBatch,
    StatusRecord,
    encode_columns,
    encode_successes,
    reads_columns,
)

NOW = time.time()
TIMING = Timing.build(
    enqueued_at=NOW - 0.05,
    received_at=NOW - 0.04,
    started_at=NOW - 0.03,
    compute_done_at=NOW - 0.01,
    finished_at=NOW,
    batch_size=5,
)


def block_outputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "probs": rng.random((n, 10), dtype=np.float32),
        "label": rng.integers(0, 9, size=(n,), dtype=np.int64),
        "maps": rng.integers(-128, 127, size=(n, 2, 3), dtype=np.int8),
    }


def test_each_row_of_a_columns_batch_reads_as_the_same_result_as_its_status_record() -> None:
    ids_a, ids_b = ["a1", "a2", "a3"], ["b1", "b2"]
    out_a, out_b = block_outputs(3, 1), block_outputs(2, 2)
    data = encode_columns("digits", "fp32", "v9", [(ids_a, out_a, TIMING), (ids_b, out_b, TIMING)])
    batch = ReplyBatch.decode(data)
    assert batch.readable and batch.version == REPLY_COLUMNS_VERSION
    assert batch.ids == ids_a + ids_b and batch.records == []

    records = encode_successes(ids_a, "digits", "fp32", "v9", out_a, TIMING) + encode_successes(
        ids_b, "digits", "fp32", "v9", out_b, TIMING
    )
    items = list(batch_items(batch))
    assert [jid for jid, _ in items] == ids_a + ids_b
    for (jid, heard), record in zip(items, records, strict=True):
        assert isinstance(heard, Row)
        got = result_from(heard, jid, False, NOW - 1.0, NOW)
        want = result_from(record, jid, False, NOW - 1.0, NOW)
        assert (got.job_id, got.model, got.variant, got.version, got.cached) == (
            want.job_id,
            want.model,
            want.variant,
            want.version,
            want.cached,
        )
        assert got.timing == want.timing and got.timing.end_to_end_ms == pytest.approx(1000.0)
        assert got.outputs.keys() == want.outputs.keys()
        for k, arr in got.outputs.items():
            assert arr.dtype == want.outputs[k].dtype and arr.shape == want.outputs[k].shape
            assert np.array_equal(arr, want.outputs[k])
        # The record a Row stands for is the one the worker stored.
        assert record_of(heard, jid) == StatusRecord.parse(record, jid)


def test_lone_jobs_ride_in_a_columns_batch_as_their_records_after_the_blocks() -> None:
    out = block_outputs(3, 3)
    lone = encode_successes(["s1"], "digits", "fp32", "v9", block_outputs(1, 4), TIMING)[0]
    failed = StatusRecord.failure("s2", BadInput("expected finite values")).encode()
    data = encode_columns(
        "digits", "fp32", "v9", [(["a", "b", "c"], out, TIMING)], [("s1", lone), ("s2", failed)]
    )
    batch = ReplyBatch.decode(data)
    assert batch.readable and batch.ids == ["a", "b", "c", "s1", "s2"]
    items = list(batch_items(batch))
    assert [jid for jid, _ in items] == batch.ids
    assert all(isinstance(h, Row) for _, h in items[:3])
    assert [h.encode() if isinstance(h, str) else h for _, h in items[3:]] == [lone, failed]
    with pytest.raises(BadInput, match="expected finite values"):
        result_from(items[4][1], "s2", False, NOW - 1.0, NOW)


def test_rows_share_no_timing_and_cannot_change_the_block() -> None:
    batch = ReplyBatch.decode(encode_columns("m", "fp32", "1", [(["x", "y"], block_outputs(2), TIMING)]))
    (jx, hx), (jy, hy) = batch_items(batch)
    rx = result_from(hx, jx, False, NOW - 2.0, NOW)
    ry = result_from(hy, jy, False, NOW - 1.0, NOW)
    assert rx.timing is not ry.timing and rx.timing.end_to_end_ms != ry.timing.end_to_end_ms
    with pytest.raises(ValueError):
        rx.outputs["probs"][0] = 1.0  # read-only, as a record's arrays are


def test_a_row_is_counted_by_its_bytes_against_the_listeners_bound() -> None:
    batch = ReplyBatch.decode(encode_columns("m", "fp32", "1", [(["x"], block_outputs(1), TIMING)]))
    ((_, heard),) = batch_items(batch)
    assert size_of(heard) == ROW_SIZE + 10 * 4 + 8 + 6  # what holding a row costs, and its outputs


def test_only_a_channel_with_the_columns_mark_is_sent_columns() -> None:
    assert reads_columns("inferq:reply:c2." + "ab" * 16)
    assert not reads_columns("inferq:reply:" + "ab" * 16)  # a client from before version 2
    assert not reads_columns("celery-reply-c2.x")


def good_block() -> dict[str, Any]:
    raw = msgpack.unpackb(encode_columns("m", "fp32", "1", [(["x", "y"], block_outputs(2), TIMING)]))
    return raw["blocks"][0]  # type: ignore[no-any-return]


def with_output(**change: Any) -> dict[str, Any]:
    b = good_block()
    b["outputs"]["probs"].update(change)
    return b


@pytest.mark.parametrize(
    "block",
    [
        with_output(data=b"\x00" * 79),  # one byte short of 2 rows of 10 float32
        with_output(data=b"\x00" * 81),
        with_output(shape=[11]),
        with_output(shape=[-10]),
        with_output(shape=[True]),
        with_output(dtype="object"),
        with_output(dtype="U4"),
        with_output(dtype="no such dtype"),
        with_output(data="text, not bytes"),
        {**good_block(), "timing": {"queue_ms": "soon"}},
        {**good_block(), "timing": "fast"},
        {**good_block(), "model": 7},
        {**good_block(), "outputs": {"probs": "raw"}},
        {**good_block(), "ids": []},
    ],
)
def test_a_malformed_block_makes_the_batch_unreadable_naming_every_id(block: dict[str, Any]) -> None:
    fine = good_block()
    fine["ids"] = ["p", "q"]
    data = msgpack.packb(
        {"v": REPLY_COLUMNS_VERSION, "blocks": [fine, block], "ids": [], "records": []}, use_bin_type=True
    )
    batch = ReplyBatch.decode(data)
    assert not batch.readable and batch.blocks == [] and batch.records == []
    assert batch.ids[:2] == ["p", "q"]  # the reader reads their keys instead
    assert batch.ids[2:] == [i for i in block["ids"] if isinstance(i, str)]


@pytest.mark.parametrize("blocks", [None, "blocks", 7])
def test_a_columns_batch_without_a_list_of_blocks_is_unreadable(blocks: Any) -> None:
    batch = ReplyBatch.decode(
        msgpack.packb({"v": REPLY_COLUMNS_VERSION, "blocks": blocks, "ids": [], "records": []})
    )
    assert not batch.readable and batch.ids == [] and batch.blocks == []


@pytest.mark.parametrize(
    ("ids", "records"),
    [(["s1", "s2"], [b"x"]), (["s1"], None), (None, []), ([7], [b"x"])],
)
def test_a_columns_batch_whose_records_do_not_match_their_ids_is_unreadable(ids: Any, records: Any) -> None:
    fine = good_block()
    batch = ReplyBatch.decode(
        msgpack.packb({"v": REPLY_COLUMNS_VERSION, "blocks": [fine], "ids": ids, "records": records})
    )
    assert not batch.readable and batch.records == [] and batch.blocks == []
    assert batch.ids[:2] == ["x", "y"]


def test_a_big_rows_result_owns_its_arrays_so_holding_it_does_not_hold_its_block() -> None:
    big = {"maps": np.random.default_rng(5).random((4, 64, 64), dtype=np.float32)}  # 16 KiB a row
    small = block_outputs(4)
    batch = ReplyBatch.decode(
        encode_columns(
            "m",
            "fp32",
            "1",
            [(["b1", "b2", "b3", "b4"], big, TIMING), (["s1", "s2", "s3", "s4"], small, TIMING)],
        )
    )
    items = dict(batch_items(batch))
    mine = result_from(items["b2"], "b2", False, NOW - 1.0, NOW).outputs["maps"]
    np.testing.assert_array_equal(mine, big["maps"][1])
    assert not np.shares_memory(mine, batch.blocks[0].outputs["maps"]) and not mine.flags.writeable
    view = result_from(items["s2"], "s2", False, NOW - 1.0, NOW).outputs["probs"]
    assert np.shares_memory(view, batch.blocks[1].outputs["probs"]) and not view.flags.writeable
