"""tasks/schema.py: specs, requests, timings and results as plain wire data."""

from __future__ import annotations

import json
import re

import msgpack
import numpy as np
import pytest

from tasks import constants as C
from tasks.errors import BadInput
from tasks.schema import JobStatus, ModelInfo, Request, Result, TensorSpec, Timing

IMAGE = TensorSpec(name="image", shape=(28, 28, 1), dtype="float32", tensor_dtype="float32")
QIMAGE = TensorSpec(
    name="image", shape=(None, 28, 1), dtype="float32", tensor_dtype="int8", quantization=(0.0039, -128)
)
LOGITS = TensorSpec(name="logits", shape=(10,), dtype="float32", tensor_dtype="float32")

INFO = ModelInfo(
    name="mnist",
    variant="int8",
    version="3",
    runtime="litert",
    inputs=(QIMAGE,),
    outputs=(LOGITS,),
    size_bytes=12345,
    labels=tuple(str(i) for i in range(10)),
    max_batch_size=16,
    max_wait_ms=1.5,
)


@pytest.mark.parametrize("spec", [IMAGE, QIMAGE, LOGITS], ids=["plain", "quantized", "vector"])
def test_tensor_spec_round_trips_through_a_dict(spec):
    d = spec.to_dict()
    assert TensorSpec.from_dict(json.loads(json.dumps(d))) == spec


def test_tensor_spec_dict_spells_quantization_and_dynamic_dims_plainly():
    d = QIMAGE.to_dict()
    assert d == {
        "name": "image",
        "shape": [None, 28, 1],
        "dtype": "float32",
        "tensor_dtype": "int8",
        "quantization": {"scale": 0.0039, "zero_point": -128},
    }
    assert IMAGE.to_dict()["quantization"] is None


def test_tensor_spec_from_dict_reads_negative_dims_as_dynamic():
    spec = TensorSpec.from_dict({"name": "x", "shape": [-1, 3], "dtype": "float32"})
    assert spec.shape == (None, 3)


def test_tensor_spec_without_tensor_dtype_takes_the_logical_dtype():
    spec = TensorSpec.from_dict({"name": "x", "shape": [3], "dtype": "int32"})
    assert spec.tensor_dtype == "int32"
    assert spec.quantization is None


def test_tensor_spec_describe():
    assert QIMAGE.describe() == "image[?,28,1]:float32"
    assert TensorSpec(name="t", shape=(), dtype="int8").describe() == "t[]:int8"


def test_model_info_round_trips_through_json_and_msgpack():
    d = INFO.to_dict()
    assert ModelInfo.from_dict(json.loads(json.dumps(d))) == INFO
    assert ModelInfo.from_dict(msgpack.unpackb(msgpack.packb(d))) == INFO
    assert d["inputs"][0]["quantization"] == {"scale": 0.0039, "zero_point": -128}
    assert d["labels"] == [str(i) for i in range(10)]


def test_model_info_from_minimal_dict_fills_defaults_and_stringifies_version():
    info = ModelInfo.from_dict(
        {
            "name": "m",
            "variant": "fp32",
            "version": 2,
            "runtime": "litert",
            "inputs": [IMAGE.to_dict()],
            "outputs": [LOGITS.to_dict()],
        }
    )
    assert info.version == "2"
    assert (info.size_bytes, info.labels, info.max_batch_size, info.max_wait_ms) == (0, (), 32, 2.0)
    assert info.key == "m:fp32"


def wire(**changes):
    d = Request(model="mnist", variant="fp32", inputs=b"blob", version="1", enqueued_at=10.0).to_wire()
    d.update(changes)
    return d


def test_request_round_trips_through_the_wire():
    req = Request(model="mnist", variant="fp32", inputs=b"blob", version="1", enqueued_at=10.0, cache=False)
    w = req.to_wire()
    assert w["v"] == C.WIRE_VERSION
    assert Request.from_wire(w) == req


@pytest.mark.parametrize("obj", [None, [1, 2], "mnist", b"x", 3])
def test_request_from_wire_refuses_non_dicts(obj):
    with pytest.raises(
        BadInput,
        match=rf"job argument must be a map with model, variant and inputs, got {type(obj).__name__}",
    ):
        Request.from_wire(obj)


@pytest.mark.parametrize(
    ("drop", "named"),
    [(("model",), "['model']"), (("inputs",), "['inputs']"), (("model", "variant"), "['model', 'variant']")],
)
def test_request_from_wire_names_missing_fields(drop, named):
    w = wire()
    for k in drop:
        del w[k]
    with pytest.raises(
        BadInput, match=rf"job is missing field\(s\) {re.escape(named)}; expected model, variant and inputs"
    ):
        Request.from_wire(w)


@pytest.mark.parametrize("v", [0, 2, "1", None])
def test_request_from_wire_refuses_another_wire_version(v):
    with pytest.raises(
        BadInput, match=rf"job wire version must be {C.WIRE_VERSION}, got {re.escape(repr(v))}"
    ):
        Request.from_wire(wire(v=v))


def test_request_from_wire_accepts_a_missing_wire_version():
    w = wire()
    del w["v"]
    assert Request.from_wire(w).model == "mnist"


@pytest.mark.parametrize("field", ["model", "variant"])
def test_request_from_wire_refuses_non_string_names(field):
    with pytest.raises(BadInput, match=rf"job field '{field}' must be a string, got int"):
        Request.from_wire(wire(**{field: 7}))


def test_request_from_wire_normalizes_optional_fields():
    req = Request.from_wire(wire(version=4, enqueued_at="yesterday"))
    assert req.version == "4"
    assert isinstance(req.enqueued_at, float)
    assert req.enqueued_at > 1e9  # fell back to now
    w = wire()
    del w["version"], w["cache"], w["enqueued_at"]
    req = Request.from_wire(w)
    assert req.version is None
    assert req.cache is True


def test_timing_build_computes_each_duration_in_milliseconds():
    t = Timing.build(
        enqueued_at=100.0,
        received_at=100.25,
        started_at=100.5,
        compute_done_at=100.75,
        finished_at=101.0,
        batch_size=4,
    )
    assert t.queue_ms == pytest.approx(250.0)
    assert t.batch_wait_ms == pytest.approx(250.0)
    assert t.compute_ms == pytest.approx(250.0)
    assert t.processing_ms == pytest.approx(750.0)
    assert t.batch_size == 4
    assert (t.enqueued_at, t.received_at, t.started_at, t.finished_at) == (100.0, 100.25, 100.5, 101.0)
    assert t.end_to_end_ms is None


def test_timing_build_clamps_clock_skew_to_zero_queue_time():
    t = Timing.build(
        enqueued_at=200.0,  # producer clock ahead of the worker's
        received_at=199.0,
        started_at=198.0,
        compute_done_at=199.5,
        finished_at=199.75,
        batch_size=1,
    )
    assert t.queue_ms == 0.0
    assert t.batch_wait_ms == 0.0


def test_timing_dict_drops_unset_end_to_end_and_ignores_unknown_keys():
    t = Timing.build(
        enqueued_at=1.0, received_at=2.0, started_at=2.0, compute_done_at=3.0, finished_at=3.0, batch_size=2
    )
    d = t.to_dict()
    assert "end_to_end_ms" not in d
    assert Timing.from_dict({**d, "future_field": 1}) == t
    t.end_to_end_ms = 12.5
    assert Timing.from_dict(t.to_dict()).end_to_end_ms == 12.5


def make_result() -> Result:
    timing = Timing.build(
        enqueued_at=1.0, received_at=1.1, started_at=1.2, compute_done_at=1.3, finished_at=1.4, batch_size=3
    )
    rng = np.random.default_rng(0)
    return Result(
        job_id="abc123",
        model="mnist",
        variant="fp32",
        version="1",
        outputs={
            "logits": rng.standard_normal(10).astype(np.float32),
            "embedding": rng.standard_normal((2, 3)).astype(np.float32),
        },
        timing=timing,
    )


def test_result_round_trips_through_json_wire_exactly():
    r = make_result()
    doc = json.loads(json.dumps(r.to_wire()))
    assert doc["v"] == C.WIRE_VERSION
    back = Result.from_wire("abc123", doc, cached=True)
    assert (back.job_id, back.model, back.variant, back.version, back.cached) == (
        "abc123",
        "mnist",
        "fp32",
        "1",
        True,
    )
    assert back.timing == r.timing
    assert sorted(back.outputs) == ["embedding", "logits"]
    for name, arr in r.outputs.items():
        assert back.outputs[name].dtype == np.float32
        assert back.outputs[name].shape == arr.shape
        assert back.outputs[name].tobytes() == arr.tobytes()


def test_result_to_json_gives_nested_lists():
    r = make_result()
    doc = r.to_json()
    assert doc["outputs"]["embedding"] == r.outputs["embedding"].tolist()
    assert doc["cached"] is False
    json.dumps(doc)


def test_job_status_values_are_the_wire_strings():
    assert JobStatus("success") is JobStatus.SUCCESS
    assert [s.value for s in JobStatus] == ["pending", "queued", "running", "success", "failure", "expired"]
