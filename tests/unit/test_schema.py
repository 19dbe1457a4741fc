"""tasks/schema.py: tensor specs, model descriptions, timings and job statuses as plain data."""

from __future__ import annotations

import json

import msgpack
import pytest

from tasks.schema import JobStatus, ModelInfo, TensorSpec, Timing

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


def test_job_status_values_are_the_wire_strings():
    assert JobStatus("success") is JobStatus.SUCCESS
    assert [s.value for s in JobStatus] == [
        "unknown",
        "queued",
        "running",
        "success",
        "failure",
        "expired",
        "cancelled",
        "lost",
    ]
