"""The bulk tensor form (``BulkTensor``, bulk version 2) from producer to stored record,
without Redis: stacked inputs, vectorised checks, per-row ids, per-batch records."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import orjson
import pytest

from producers.claims import CLAIMED
from producers.plans import ChunkPlan, chunk_bytes, chunk_plans
from producers.prepare import Stacked, prepare
from tasks.codec import decode_stacked, encode_array
from tasks.errors import BadInput, IncompatibleVersion, PayloadTooLarge
from tasks.keys import job_id, job_ids
from tasks.schema import ModelInfo, TensorSpec, Timing
from tasks.settings import Settings
from tasks.validation import validate_rows
from tasks.wire import (
    TENSOR_VERSION,
    VERSION,
    BulkMessage,
    BulkTensor,
    Request,
    Result,
    StatusRecord,
    encode_successes,
)
from workers.broker.envelope import parse_message
from workers.serving.batcher import Batcher
from workers.serving.pipeline import Pipeline

X = TensorSpec(name="x", shape=(2, 3), dtype="float32", tensor_dtype="float32")
OUT = TensorSpec(name="total", shape=(), dtype="float32", tensor_dtype="float32")
INFO = ModelInfo(name="toy", variant="fp32", version="1", runtime="fake", inputs=(X,), outputs=(OUT,))


class SumRuntime:
    info = INFO

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        return {"total": x.sum(axis=(1, 2)), "rows": x.sum(axis=2)}


def xs(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 2, 3)).astype(np.float32)


def sent(arrays: np.ndarray, settings: Settings | None = None) -> tuple[ChunkPlan, bytes]:
    """A chunk planned as if every id were new, and its first message as a worker reads it."""
    plan = ChunkPlan(
        settings or Settings(),
        INFO,
        Stacked({"x": arrays}),
        no_cache=False,
        deadline_ms=None,
        priority="normal",
    )
    plan.read_claims([[CLAIMED]] * len(arrays))
    out = plan.message()
    assert out is not None
    return plan, out.message.encode()


def test_many_inputs_are_prepared_stacked_and_cast_once():
    p = prepare(Settings(), INFO, xs().astype(np.float64), validate=True)
    assert isinstance(p, Stacked) and len(p) == 10 and p.arrays["x"].dtype == np.float32
    chunk = p[2:5]
    assert isinstance(chunk, Stacked) and len(chunk) == 3
    inputs, payload = p[3]  # still a Prepared for whoever wants one
    np.testing.assert_array_equal(inputs["x"], p.arrays["x"][3])
    assert payload == prepare(Settings(), INFO, [p.arrays["x"][3]], validate=True)[0][1]


K = TensorSpec(name="k", shape=(), dtype="int32", tensor_dtype="int32")
TWO = ModelInfo(name="two", variant="fp32", version="1", runtime="fake", inputs=(X, K), outputs=(OUT,))


def test_a_mapping_of_input_columns_is_prepared_stacked_row_i_input_i():
    x, k = xs(4), np.array([1, 2, 3, 4], dtype=np.int64)  # int64 cast to the model's int32
    p = prepare(Settings(), TWO, {"x": x, "k": k}, validate=True)
    assert isinstance(p, Stacked) and len(p) == 4 and p.arrays["k"].dtype == np.int32
    inputs, payload = p[2]
    np.testing.assert_array_equal(inputs["x"], x[2])
    assert payload == prepare(Settings(), TWO, [{"x": x[2], "k": np.int32(3)}], validate=True)[0][1]
    (one,) = prepare(Settings(), TWO, {"x": x[:1], "k": k[:1]}, validate=True)  # one row: a single job
    assert one[0]["k"] == 1


@pytest.mark.parametrize(
    ("columns", "named"),
    [
        ({"x": xs(3), "k": np.arange(2)}, "input 'k': 2 rows, but input 'x' has 3: one row per input"),
        ({"x": xs(3), "k": np.int32(1)}, "input 'k': expected an array with one row per input, got a scalar"),
        ({}, "expected input name -> array of inputs (one row per input), got an empty mapping"),
        (
            {"x": np.array(["a", "b"]), "k": np.arange(2)},
            "input 'x': expected an array of numbers, got dtype <U1",
        ),
    ],
)
def test_input_columns_of_different_lengths_or_none_are_refused_naming_them(columns, named):
    with pytest.raises(BadInput) as err:
        prepare(Settings(), TWO, columns, validate=True)
    assert named in str(err.value)


def test_a_bad_row_is_refused_by_the_client_naming_which_input():
    arr = xs()
    arr[7, 1, 2] = np.nan
    with pytest.raises(
        BadInput, match=r"input 'x': expected finite values, got 1 NaN and 0 inf \(input 7 of 10\)"
    ):
        prepare(Settings(), INFO, arr, validate=True)


def test_row_ids_equal_the_single_input_ids():
    arr = xs(7)
    assert job_ids("toy", "fp32", "1", {"x": arr}) == [job_id("toy", "fp32", "1", {"x": a}) for a in arr]
    big = np.random.default_rng(1).random((2, 300, 300)).astype(np.float32)  # hashed whole, not in pieces
    assert job_ids("m", "v", "2", {"b": big}) == [job_id("m", "v", "2", {"b": a}) for a in big]


def test_a_chunk_goes_out_as_one_bulk_tensor_message_of_version_2():
    plan, raw = sent(xs(10))
    bulk = parse_message(raw)
    assert isinstance(bulk, BulkTensor) and bulk.ids == plan.ids
    assert bulk.common.model == "toy" and bulk.common.version == "1"
    assert bulk.tensors is not None  # 240 bytes: inline
    got = decode_stacked(bulk.tensors, len(bulk.ids), 1 << 20)
    np.testing.assert_array_equal(got["x"], plan.chunk.arrays["x"])  # type: ignore[attr-defined]


def test_only_the_inputs_to_send_travel():
    arr = xs(6)
    plan = ChunkPlan(
        Settings(), INFO, Stacked({"x": arr}), no_cache=False, deadline_ms=None, priority="normal"
    )
    answers = [[CLAIMED], [2], [CLAIMED], [2], [2], [CLAIMED]]  # 2: someone else queued it
    plan.read_claims(answers)
    out = plan.message()
    assert out is not None
    bulk = parse_message(out.message.encode())
    assert isinstance(bulk, BulkTensor) and bulk.ids == [plan.ids[0], plan.ids[2], plan.ids[5]]
    np.testing.assert_array_equal(decode_stacked(bulk.tensors, 3, 1 << 20)["x"], arr[[0, 2, 5]])


def test_big_tensors_travel_beside_the_message_in_parts_under_the_message_limit():
    arr = np.random.default_rng(2).random((64, 2, 3)).astype(np.float32)
    arr = np.repeat(arr, 200, axis=2).reshape(64, 2, 600)  # 4800 bytes a row
    info = ModelInfo(name="toy", variant="fp32", version="1", runtime="fake",
                     inputs=(TensorSpec(name="x", shape=(2, 600), dtype="float32", tensor_dtype="float32"),), outputs=(OUT,))  # fmt: skip
    settings = Settings(max_message_bytes=128 * 1024)
    plan = ChunkPlan(settings, info, Stacked({"x": arr}), no_cache=False, deadline_ms=None, priority="normal")
    plan.read_claims([[CLAIMED]] * 64)
    out = plan.message()
    assert out is not None and len(out.more) == 4  # 13 rows (64 KiB) per message
    assert len(out.blobs) == 5 and all(len(b) <= 64 * 1024 for b in out.blobs.values())
    bulk = parse_message(out.message.encode())
    assert isinstance(bulk, BulkTensor) and len(bulk.ids) == 13
    ref = bulk.tensors["x"]["ref"]
    assert "data" not in bulk.tensors["x"] and out.blobs[ref] == arr[:13].tobytes()  # raw bytes


def test_an_older_worker_answers_each_item_incompatible_version():
    """What a worker before this form does with it: split the items, parse each as a
    version-1 job: every waiter gets IncompatibleVersion naming both versions."""
    _, raw = sent(xs(3))
    body = msgpack.unpackb(__import__("base64").b64decode(orjson.loads(raw)["body"]))[0][0]
    assert body["v"] == TENSOR_VERSION and BulkMessage.is_bulk(body)
    items, skipped = BulkMessage.split(body)
    assert len(items) == 3 and not skipped
    for _, arg in items:
        with pytest.raises(
            IncompatibleVersion, match=f"job wire version must be {VERSION}, got {TENSOR_VERSION}"
        ):
            Request.from_wire(arg)


@pytest.mark.parametrize("v", [1, 3, None])
def test_a_tensor_bulk_of_another_version_is_answered_per_item(v):
    wire = BulkTensor(Request("toy", "fp32"), ["a", "b"], tensors={"x": encode_array(xs(2))}).to_wire()
    wire["v"] = v
    assert not BulkTensor.is_tensor_bulk(wire)
    items, _ = BulkMessage.split(wire)
    assert [jid for jid, _ in items] == ["a", "b"]
    if v != VERSION:
        for _, arg in items:
            with pytest.raises(IncompatibleVersion, match=f"got {v!r}"):
                Request.from_wire(arg)


def test_the_worker_fails_a_bad_row_alone_and_runs_the_rest():
    arr = xs(5)
    arr[1, 0, 0] = np.inf
    plan, raw = sent(arr)
    bulk = parse_message(raw)
    assert isinstance(bulk, BulkTensor)
    block, failed = Pipeline({"toy:fp32": SumRuntime()}, max_payload_bytes=1 << 20).prepare_bulk(
        bulk, time.time()
    )  # type: ignore[dict-item]
    assert block is not None and block.ids == [plan.ids[i] for i in (0, 2, 3, 4)]
    assert {k: v.message for k, v in failed.items()} == {
        plan.ids[1]: "input 'x': expected finite values, got 0 NaN and 1 inf"
    }


@pytest.mark.parametrize(
    ("tensors", "error", "match"),
    [
        (
            {"x": {"dtype": "<f8", "shape": [3, 2, 3], "data": bytes(144)}},
            BadInput,
            r"expected dtype float32, got float64",
        ),
        (
            {"x": {"dtype": "<f4", "shape": [3, 3, 2], "data": bytes(72)}},
            BadInput,
            r"expected shape \[2, 3\], got \[3, 2\]",
        ),
        (
            {"x": {"dtype": "<f4", "shape": [2, 2, 3], "data": bytes(48)}},
            BadInput,
            r"must start with the number of items \(3\)",
        ),
        (
            {"x": {"dtype": "<f4", "shape": [3, 2, 3], "data": bytes(10)}},
            BadInput,
            r"need 72 bytes, got 10 bytes",
        ),
        (
            {"x": {"dtype": "|O", "shape": [3, 2, 3], "data": bytes(72)}},
            BadInput,
            r"dtype must be bool, int, uint or float",
        ),
        (
            {"y": {"dtype": "<f4", "shape": [3, 2, 3], "data": bytes(72)}},
            BadInput,
            r"expected inputs \['x'\], got \['y'\]",
        ),
        (
            {"x": {"dtype": "<f4", "shape": [3, 2000, 3], "data": bytes(72000)}},
            PayloadTooLarge,
            r"over the limit of 1024 bytes",
        ),
        (b"\xc1junk", BadInput, r"bulk 'tensors' must be a non-empty map"),
        (
            {"x": {"dtype": "<f4", "shape": [3, 2, 3], "ref": "inferq:input:a:1"}},
            BadInput,
            r"'data' must be bytes, got None",
        ),
    ],
)
def test_a_bad_message_fails_every_item_naming_what_was_expected(tensors, error, match):
    bulk = BulkTensor(Request("toy", "fp32"), ["a", "b", "c"], tensors=tensors)
    with pytest.raises(error, match=match):
        Pipeline({"toy:fp32": SumRuntime()}, max_payload_bytes=1024).prepare_bulk(bulk, time.time())  # type: ignore[dict-item]


def test_validate_rows_checks_the_stack_once_and_names_bad_rows():
    arr = xs(4)
    arr[2] = np.nan
    valid, bad = validate_rows({"x": arr}, [X])
    assert valid["x"] is arr and list(bad) == [2]
    with pytest.raises(BadInput, match="expected shape"):
        validate_rows({"x": arr.reshape(4, 3, 2)}, [X])


def test_batch_records_equal_status_record_encode_byte_for_byte():
    arr = xs(6)
    pipe = Pipeline({"toy:fp32": SumRuntime()}, max_payload_bytes=1 << 20)  # type: ignore[dict-item]
    _, raw = sent(arr)
    bulk = parse_message(raw)
    assert isinstance(bulk, BulkTensor)
    block, _ = pipe.prepare_bulk(bulk, time.time())
    assert block is not None
    computed = pipe.compute(block.split(4))  # two parts of one message, one model call
    assert computed.rows == 6
    for part, outputs, timing in computed.parts():
        assert timing.batch_size == 6
        docs = encode_successes(part.ids, "toy", "fp32", "1", outputs, timing)
        for i, (jid, doc) in enumerate(zip(part.ids, docs, strict=True)):
            result = Result(jid, "toy", "fp32", "1", {k: v[i] for k, v in outputs.items()}, timing)
            ref = StatusRecord.success(jid, result.to_wire()).encode()
            date = orjson.loads(doc)["date_done"]
            assert doc == ref.replace(orjson.loads(ref)["date_done"].encode(), date.encode())
            back = StatusRecord.parse(doc, jid)
            assert back is not None and back.cacheable
            got = back.to_result(cached=False)
            np.testing.assert_array_equal(got.outputs["rows"], outputs["rows"][i])
            assert got.timing == Timing.from_dict(timing.to_dict())


@pytest.mark.parametrize("names", [("probs",), ("probs", "logits")])
def test_batch_records_of_one_output_or_several_equal_status_record_encode(names):
    """``encode_successes`` joins one output's record in one step (most models have one)
    and several outputs' piece by piece: both byte for byte ``StatusRecord.encode``."""
    rng = np.random.default_rng(3)
    outputs = {name: rng.random((5, 10), dtype=np.float32) for name in names}
    t = time.time()
    timing = Timing.build(
        enqueued_at=t, received_at=t, started_at=t, compute_done_at=t, finished_at=t, batch_size=5
    )
    ids = [f"job-{i}" for i in range(5)]
    docs = encode_successes(ids, "digits", "fp32", "7", outputs, timing)
    for i, (jid, doc) in enumerate(zip(ids, docs, strict=True)):
        result = Result(jid, "digits", "fp32", "7", {k: v[i] for k, v in outputs.items()}, timing)
        ref = StatusRecord.success(jid, result.to_wire()).encode()
        date = orjson.loads(doc)["date_done"]
        assert doc == ref.replace(orjson.loads(ref)["date_done"].encode(), date.encode())
    assert encode_successes([], "digits", "fp32", "7", {n: v[:0] for n, v in outputs.items()}, timing) == []


def test_the_batcher_fills_a_batch_by_rows():
    ran: list[list[int]] = []
    b: Batcher[int] = Batcher(lambda items: ran.append(items))
    for rows in (3, 3, 2, 4):
        b.put("k", rows, max_size=8, max_wait_s=0.05, rows=rows)
    b.start()
    deadline = time.monotonic() + 5
    while sum(map(len, ran)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    b.stop()
    assert ran == [[3, 3, 2], [4]]


def _chunks(prepared, settings: Settings, chunk_size: int) -> list[int]:
    plans = chunk_plans(
        settings, INFO, prepared, chunk_size, no_cache=True, deadline_ms=None, priority="normal"
    )
    return [len(p.chunk) for p in plans]


def test_a_chunk_of_big_inputs_holds_no_more_bytes_than_one_message_may():
    """A chunk is one step under the client's bound: 256 inputs of 600 KB made one of
    154 MB. Rows of 24 bytes under a 100-byte limit (half of 200): four per chunk, the
    count asked for never exceeded, every input in one chunk, in order."""
    settings = Settings(max_message_bytes=200)
    assert chunk_bytes(settings) == 100
    stacked = prepare(settings, INFO, xs(10), validate=True)
    assert isinstance(stacked, Stacked)
    assert _chunks(stacked, settings, 64) == [4, 4, 2]
    assert _chunks(stacked, settings, 3) == [3, 3, 3, 1]
    assert _chunks(stacked, Settings(), 64) == [10]  # small inputs: chunk_size alone decides
    plans = list(chunk_plans(settings, INFO, stacked, 64, no_cache=True, deadline_ms=None, priority="normal"))
    np.testing.assert_array_equal(np.concatenate([p.chunk.arrays["x"] for p in plans]), stacked.arrays["x"])


def test_inputs_of_several_sizes_are_chunked_by_their_payloads_and_a_huge_one_goes_alone():
    """Inputs that cannot be stacked (shapes differ) are chunked by their encoded
    payloads; an input over the limit by itself still goes, alone."""
    settings = Settings(max_message_bytes=2000)
    small = [np.zeros((2, 3), np.float32)] * 3
    huge = np.zeros((200, 3), np.float32)  # 2,400 bytes: over the 1,000-byte limit alone
    prepared = prepare(settings, INFO, [*small, huge, *small], validate=False)
    assert not isinstance(prepared, Stacked)
    sizes = [len(payload) for _, payload in prepared]
    chunks = _chunks(prepared, settings, 64)
    assert sum(chunks) == 7 and 1 in chunks
    at = 0
    for n in chunks:
        assert n == 1 or sum(sizes[at : at + n]) <= chunk_bytes(settings)
        at += n
    assert chunks[0] == 3 and chunks[1] == 1  # the small ones together, the huge one alone
