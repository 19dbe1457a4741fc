"""``Gather``: arrivals into stacked rows (producers/bulk.py), row by row, without Redis."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from producers.bulk import Gather, check_outputs
from producers.heard import Row
from producers.plans import JobSpec
from tasks.errors import BadInput, IncompatibleVersion
from tasks.schema import ModelInfo, TensorSpec, Timing
from tasks.wire import ReplyBlock, Result, StatusRecord

TIMING = {
    "enqueued_at": 100.0,
    "received_at": 100.5,
    "started_at": 100.6,
    "finished_at": 100.7,
    "queue_ms": 500.0,
    "batch_wait_ms": 100.0,
    "compute_ms": 80.0,
    "processing_ms": 200.0,
    "batch_size": 3,
}


def block(ids: list[str], probs: np.ndarray, version: str = "1") -> ReplyBlock:
    return ReplyBlock(ids, "digits", "fp32", version, dict(TIMING), {"probs": probs}, probs[0].nbytes)


def plan(t0: float, *specs: JobSpec) -> Any:
    return SimpleNamespace(t0=t0, specs=list(specs))


def stored(jid: str, probs: np.ndarray) -> StatusRecord:
    t = Timing.from_dict(TIMING)
    return StatusRecord.success(jid, Result(jid, "digits", "fp32", "1", {"probs": probs}, t).to_wire())


def test_rows_of_a_reply_block_land_in_their_inputs_rows_with_their_timing() -> None:
    told: list[int] = []
    g = Gather("digits", "fp32", 3, told.append)
    g.add_plan(plan(99.0, JobSpec("a"), JobSpec("b"), JobSpec("c")))
    assert list(g.pending) == ["a", "b", "c"] and told == []
    probs = np.arange(30, dtype=np.float32).reshape(3, 10)
    b = block(["c", "a", "b"], probs[[2, 0, 1]])  # the worker's order is not the caller's
    for k, jid in enumerate(b.ids):
        g.settle(jid, (Row(b, k), 101.0))
    g.report(3)
    g.report(0)
    assert told == [3]  # answered rows, each told once
    got = g.result()
    np.testing.assert_array_equal(got.outputs["probs"], probs)
    assert got.ok and got.versions == ("1",) and not got.cached.any()
    np.testing.assert_array_equal(got.timing["queue_ms"], [500.0] * 3)
    np.testing.assert_array_equal(got.timing["batch_size"], [3] * 3)
    np.testing.assert_allclose(got.timing["end_to_end_ms"], [2000.0] * 3)  # 101.0 - 99.0


def test_a_cache_hit_settles_at_once_with_its_own_timing_and_a_repeat_shares_its_answer() -> None:
    told: list[int] = []
    g = Gather("digits", "fp32", 3, told.append)
    hit = np.full(10, 0.5, np.float32)
    g.add_plan(
        plan(200.0, JobSpec("h", cached=True, enqueued=False, record=stored("h", hit), arrived=200.01))
    )
    assert told == [1]  # the hit: answered as its chunk is sent
    g.add_plan(plan(200.1, JobSpec("x"), JobSpec("x", enqueued=False)))  # the same input twice
    assert list(g.pending) == ["x"]  # waited for once
    b = block(["x"], np.ones((1, 10), np.float32))
    g.settle("x", (Row(b, 0), 200.5))
    g.report(1)
    assert told == [1, 2]  # one id arrived, two rows answered
    got = g.result()
    assert got.cached.tolist() == [True, False, False]
    np.testing.assert_array_equal(got.outputs["probs"][0], hit)
    np.testing.assert_array_equal(got.outputs["probs"][1:], np.ones((2, 10)))
    assert got.timing["compute_ms"][0] == 0.0 and got.timing["end_to_end_ms"][0] == pytest.approx(10.0)
    np.testing.assert_allclose(got.timing["end_to_end_ms"][1:], [400.0, 400.0])


def test_a_failed_input_is_kept_by_row_with_zeros_and_nan_timing() -> None:
    g = Gather("digits", "fp32", 2)
    g.add_plan(plan(1.0, JobSpec("ok"), JobSpec("bad")))
    g.settle("ok", (Row(block(["ok"], np.ones((1, 10), np.float32)), 0), 2.0))
    failure = StatusRecord.failure("bad", BadInput("input 'image': expected finite values")).encode()
    g.settle("bad", (failure, 2.0))
    got = g.result()
    assert list(got.errors) == [1] and isinstance(got.errors[1], BadInput)
    assert (got.outputs["probs"][1] == 0).all() and np.isnan(got.timing["end_to_end_ms"][1])
    with pytest.raises(BadInput, match=r"input 1 of 2 \(1 failed\): input 'image'"):
        got.raise_for_errors()


def test_a_row_whose_outputs_differ_from_the_first_ones_is_refused_naming_both() -> None:
    told: list[int] = []
    g = Gather("digits", "fp32", 2, told.append)
    g.add_plan(plan(1.0, JobSpec("p"), JobSpec("q")))
    g.settle("p", (Row(block(["p"], np.ones((1, 10), np.float32)), 0), 2.0))
    g.settle("q", (Row(block(["q"], np.ones((1, 12), np.float32)), 0), 2.0))  # shapes vary with the input
    g.report(2)
    assert told == [2]  # the refused row counted once, as answered
    got = g.result()
    assert list(got.errors) == [1] and type(got.errors[1]) is BadInput
    assert "outputs probs float32[12] differ from the earlier inputs' probs float32[10]" in str(got.errors[1])
    assert got.versions == ("1",)


def test_outputs_that_differ_because_the_model_changed_version_are_incompatible_version() -> None:
    g = Gather("digits", "fp32", 3)
    g.add_plan(plan(1.0, JobSpec("p"), JobSpec("q"), JobSpec("r")))
    g.settle("p", (Row(block(["p"], np.ones((1, 10), np.float32)), 0), 2.0))
    g.settle("q", (Row(block(["q"], np.ones((1, 12), np.float32), version="2"), 0), 2.0))
    g.settle("r", (Row(block(["r"], np.ones((1, 10), np.float32), version="2"), 0), 2.0))  # same shape: kept
    got = g.result()
    assert list(got.errors) == [1] and type(got.errors[1]) is IncompatibleVersion
    assert "digits:fp32 changed from version 1 to 2 during the call" in str(got.errors[1])
    assert got.versions == ("1", "2")


def two_outputs(ids: list[str], probs: np.ndarray, extra: np.ndarray) -> ReplyBlock:
    return ReplyBlock(
        ids,
        "digits",
        "fp32",
        "1",
        dict(TIMING),
        {"probs": probs, "extra": extra},
        probs[0].nbytes + extra[0].nbytes,
    )


def test_only_the_outputs_asked_for_are_kept_and_compared() -> None:
    g = Gather("digits", "fp32", 3, outputs=["probs"])
    g.add_plan(plan(1.0, JobSpec("a"), JobSpec("b"), JobSpec("c")))
    # "extra" varies in shape from block to block: not asked for, so not a refusal.
    g.settle("a", (Row(two_outputs(["a"], np.full((1, 10), 1, np.float32), np.zeros((1, 3))), 0), 2.0))
    g.settle("b", (Row(two_outputs(["b"], np.full((1, 10), 2, np.float32), np.zeros((1, 5))), 0), 2.0))
    t = Timing.from_dict(TIMING)
    record = StatusRecord.success(
        "c",
        Result(
            "c", "digits", "fp32", "1", {"probs": np.full(10, 3, np.float32), "extra": np.zeros(7)}, t
        ).to_wire(),
    )
    g.settle("c", (record.encode(), 2.0))  # a record read whole, not a reply block's row
    got = g.result()
    assert got.ok and set(got.outputs) == {"probs"}
    np.testing.assert_array_equal(got.outputs["probs"][:, 0], [1, 2, 3])


def test_outputs_not_among_the_models_are_refused_naming_them() -> None:
    info = ModelInfo(
        name="digits",
        variant="fp32",
        version="1",
        runtime="fake",
        inputs=(TensorSpec(name="image", shape=(28, 28, 1), dtype="float32", tensor_dtype="float32"),),
        outputs=(TensorSpec(name="probs", shape=(10,), dtype="float32", tensor_dtype="float32"),),
    )
    assert check_outputs(info, None) is None and check_outputs(info, ["probs"]) == ["probs"]
    with pytest.raises(
        BadInput, match=r"outputs: expected some of \['probs'\] for digits:fp32, got \['logits'\]"
    ):
        check_outputs(info, ["logits"])


def test_rows_of_blocks_that_interleave_keep_each_blocks_rows_timing_and_arrival() -> None:
    """Rows are copied a run of one block at a time: a run is cut where another block's
    row comes, so rows of two blocks taken in turns (and a row heard twice, the second
    time from another block) must each end with their own block's values."""
    g = Gather("digits", "fp32", 6)
    ids = ["a", "b", "c", "d", "e", "f"]
    g.add_plan(plan(10.0, *(JobSpec(j) for j in ids)))
    first = block(["a", "c", "e"], np.arange(30, dtype=np.float32).reshape(3, 10))
    later = ReplyBlock(
        ["b", "d", "f"],
        "digits",
        "fp32",
        "1",
        {**TIMING, "queue_ms": 7.0, "batch_size": 9},
        {"probs": -np.arange(30, dtype=np.float32).reshape(3, 10)},
        40,
    )
    for k in range(3):
        g.settle(first.ids[k], (Row(first, k), 11.0 + k))
        g.settle(later.ids[k], (Row(later, k), 21.0 + k))
    g.settle("a", (Row(later, 0), 99.0))  # heard again: the first answer stays
    got = g.result()
    np.testing.assert_array_equal(got.outputs["probs"][[0, 2, 4]], first.outputs["probs"])
    np.testing.assert_array_equal(got.outputs["probs"][[1, 3, 5]], later.outputs["probs"])
    assert got.timing["queue_ms"].tolist() == [500.0, 7.0] * 3
    assert got.timing["batch_size"].tolist() == [3, 9] * 3
    np.testing.assert_allclose(got.timing["end_to_end_ms"], [1000, 11000, 2000, 12000, 3000, 13000])
    assert got.ok


def test_a_run_settled_before_a_refused_block_is_kept() -> None:
    """A block whose outputs do not fit ends the run of the block before it: the rows
    already settled keep their values; only the refused block's row fails."""
    g = Gather("digits", "fp32", 3)
    g.add_plan(plan(1.0, JobSpec("a"), JobSpec("b"), JobSpec("c")))
    good = block(["a", "b"], np.ones((2, 10), np.float32))
    wide = block(["c"], np.ones((1, 12), np.float32))
    g.settle("a", (Row(good, 0), 2.0))
    g.settle("b", (Row(good, 1), 2.0))
    g.settle("c", (Row(wide, 0), 2.0))
    got = g.result()
    assert list(got.errors) == [2] and isinstance(got.errors[2], BadInput)
    np.testing.assert_array_equal(got.outputs["probs"][:2], np.ones((2, 10)))
    assert not np.isnan(got.timing["end_to_end_ms"][:2]).any() and np.isnan(got.timing["queue_ms"][2])


def test_a_row_without_an_output_asked_for_is_incompatible_version_and_the_rest_still_come() -> None:
    """``outputs=["probs"]`` was checked against the model's metadata; a block from a
    version without ``probs`` must fail its row, not make empty output arrays that a
    later row then fills while the first row's copy looks for ``probs`` (a KeyError)."""
    g = Gather("digits", "fp32", 2, outputs=["probs"])
    g.add_plan(plan(1.0, JobSpec("a"), JobSpec("b")))
    other = ReplyBlock(
        ["a"], "digits", "fp32", "2", dict(TIMING), {"logits": np.ones((1, 10), np.float32)}, 40
    )
    g.settle("a", (Row(other, 0), 2.0))
    g.settle("b", (stored("b", np.full(10, 0.5, np.float32)), 2.0))
    got = g.result()
    assert list(got.errors) == [0] and isinstance(got.errors[0], IncompatibleVersion)
    assert "probs" in str(got.errors[0])
    np.testing.assert_array_equal(got.outputs["probs"][1], np.full(10, 0.5, np.float32))
