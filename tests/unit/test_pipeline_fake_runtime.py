"""workers/serving/pipeline.py with a fake in-memory runtime: per-job checks, batching, error mapping."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.codec import encode_inputs
from tasks.errors import BadInput, ModelNotFound, PayloadTooLarge, TransientError
from tasks.schema import ModelInfo, TensorSpec
from tasks.wire import Request, Result
from workers.serving.pipeline import Pipeline, Prepared

IN = TensorSpec(name="x", shape=(2, 3), dtype="float32", tensor_dtype="float32")
OUT_SUM = TensorSpec(name="total", shape=(), dtype="float32", tensor_dtype="float32")
OUT_ROWS = TensorSpec(name="rows", shape=(2,), dtype="float32", tensor_dtype="float32")


def model_info(name="toy", variant="fp32", version="1") -> ModelInfo:
    return ModelInfo(
        name=name, variant=variant, version=version, runtime="fake", inputs=(IN,), outputs=(OUT_SUM, OUT_ROWS)
    )


class SumRuntime:
    """Sums each example: ``total`` over both axes, ``rows`` over the last."""

    def __init__(self, info: ModelInfo | None = None) -> None:
        self.info = info or model_info()
        self.calls: list[dict[str, np.ndarray]] = []

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(inputs)
        x = inputs["x"]
        return {"total": x.sum(axis=(1, 2)), "rows": x.sum(axis=2)}


class FailingRuntime(SumRuntime):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def predict(self, inputs):
        raise self.exc


def pipeline(*runtimes, max_payload_bytes: int = 1 << 20) -> Pipeline:
    rts = runtimes or (SumRuntime(),)
    return Pipeline({rt.info.key: rt for rt in rts}, max_payload_bytes=max_payload_bytes)


def job(x=None, *, model="toy", variant="fp32", version=None, enqueued_at=100.0, inputs=None) -> dict:
    if inputs is None:
        x = np.arange(6, dtype=np.float32).reshape(2, 3) if x is None else x
        inputs = encode_inputs({"x": x})
    return Request(
        model=model, variant=variant, inputs=inputs, version=version, enqueued_at=enqueued_at
    ).to_wire()


def test_prepare_decodes_and_validates_one_job():
    rt = SumRuntime()
    x = np.full((2, 3), 0.5, dtype=np.float32)
    p = pipeline(rt).prepare("job-1", job(x), received_at=100.5)
    assert isinstance(p, Prepared)
    assert (p.job_id, p.received_at, p.runtime) == ("job-1", 100.5, rt)
    assert list(p.inputs) == ["x"]
    np.testing.assert_array_equal(p.inputs["x"], x)
    assert p.batch_key == ("toy:fp32", (("x", (2, 3)),))


def test_prepare_accepts_a_json_style_job():
    raw = job(inputs={"x": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})
    p = pipeline().prepare("j", raw, received_at=0.0)
    assert p.inputs["x"].dtype == np.float32
    assert p.inputs["x"].sum() == 21.0


def test_prepare_refuses_an_unknown_model_listing_the_served_ones():
    p = pipeline(SumRuntime(), SumRuntime(model_info(variant="int8")))
    with pytest.raises(
        ModelNotFound, match=r"this worker does not serve other:fp32; it serves \['toy:fp32', 'toy:int8'\]"
    ):
        p.prepare("j", job(model="other"), received_at=0.0)


def test_prepare_refuses_an_unknown_variant():
    with pytest.raises(ModelNotFound, match=r"does not serve toy:fp16; it serves \['toy:fp32'\]"):
        pipeline().prepare("j", job(variant="fp16"), received_at=0.0)


def test_prepare_refuses_a_version_mismatch_naming_both_versions():
    with pytest.raises(
        ModelNotFound, match=r"toy:fp32: job asks for version 2, this worker serves version 1"
    ):
        pipeline().prepare("j", job(version="2"), received_at=0.0)


def test_prepare_accepts_the_matching_version_or_none():
    assert pipeline().prepare("j", job(version="1"), received_at=0.0).request.version == "1"
    assert pipeline().prepare("j", job(version=None), received_at=0.0).request.version is None


def test_prepare_refuses_a_malformed_job_argument():
    with pytest.raises(BadInput, match="job argument must be a map"):
        pipeline().prepare("j", ["toy", "fp32"], received_at=0.0)


def test_prepare_refuses_inputs_of_the_wrong_dtype():
    with pytest.raises(BadInput, match="input 'x': expected dtype float32, got float64"):
        pipeline().prepare("j", job(np.zeros((2, 3), dtype=np.float64)), received_at=0.0)


def test_prepare_refuses_inputs_of_the_wrong_shape():
    with pytest.raises(BadInput, match=r"expected shape \[2, 3\], got \[3, 2\]"):
        pipeline().prepare("j", job(np.zeros((3, 2), dtype=np.float32)), received_at=0.0)


def test_prepare_refuses_nan_inputs():
    x = np.zeros((2, 3), dtype=np.float32)
    x[1, 1] = np.nan
    with pytest.raises(BadInput, match="got 1 NaN and 0 inf"):
        pipeline().prepare("j", job(x), received_at=0.0)


def test_prepare_refuses_undecodable_inputs():
    with pytest.raises(BadInput, match="not valid msgpack"):
        pipeline().prepare("j", job(inputs=b"\xc1garbage"), received_at=0.0)


def test_prepare_applies_the_payload_limit():
    with pytest.raises(PayloadTooLarge, match="over the limit of 16 bytes"):
        pipeline(max_payload_bytes=16).prepare("j", job(), received_at=0.0)


def test_run_on_three_jobs_returns_three_results_in_order_with_per_job_outputs():
    rt = SumRuntime()
    p = pipeline(rt)
    xs = [np.full((2, 3), k, dtype=np.float32) + np.arange(3, dtype=np.float32) for k in (1, 10, 100)]
    jobs = [p.prepare(f"job-{i}", job(x, enqueued_at=50.0), received_at=50.25) for i, x in enumerate(xs)]
    results = p.run(jobs)

    assert len(rt.calls) == 1  # one model call for the batch
    assert rt.calls[0]["x"].shape == (3, 2, 3)
    assert [r.job_id for r in results] == ["job-0", "job-1", "job-2"]
    for r, x in zip(results, xs, strict=True):
        assert isinstance(r, Result)
        assert (r.model, r.variant, r.version, r.cached) == ("toy", "fp32", "1", False)
        assert r.outputs["total"].shape == ()
        assert r.outputs["total"] == pytest.approx(float(x.sum()))
        np.testing.assert_allclose(r.outputs["rows"], x.sum(axis=1))
        assert r.timing.batch_size == 3
        assert r.timing.queue_ms == pytest.approx(250.0)
        assert r.timing.compute_ms >= 0.0
        assert r.timing.finished_at >= r.timing.started_at
    assert [float(r.outputs["total"]) for r in results] == [12.0, 66.0, 606.0]


def test_run_results_survive_the_wire():
    p = pipeline()
    [r] = p.run([p.prepare("only", job(), received_at=100.0)])
    back = Result.from_wire("only", r.to_wire(), cached=False)
    assert back.outputs["rows"].shape == (2,)
    np.testing.assert_array_equal(back.outputs["rows"], [3.0, 12.0])
    assert back.outputs["total"].item() == 15.0
    assert back.timing == r.timing


def test_scalar_per_job_output_keeps_its_shape_through_the_wire():
    p = pipeline()
    [r] = p.run([p.prepare("only", job(), received_at=100.0)])
    assert r.outputs["total"].shape == OUT_SUM.shape == ()
    back = Result.from_wire("only", r.to_wire(), cached=False)
    assert back.outputs["total"].shape == ()


def test_runtime_raising_runtime_error_becomes_transient_error():
    rt = FailingRuntime(RuntimeError("tensor arena exhausted"))
    p = pipeline(rt)
    jobs = [p.prepare(f"j{i}", job(), received_at=0.0) for i in range(2)]
    with pytest.raises(
        TransientError,
        match=r"toy:fp32: runtime failed on a batch of 2: RuntimeError: tensor arena exhausted",
    ) as info:
        p.run(jobs)
    assert not info.value.cacheable


def test_runtime_raising_an_inferq_error_keeps_it():
    p = pipeline(FailingRuntime(BadInput("runtime says no")))
    with pytest.raises(BadInput, match=r"^runtime says no$"):
        p.run([p.prepare("j", job(), received_at=0.0)])
