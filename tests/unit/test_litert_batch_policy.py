"""workers/models/runtimes/litert.py and batch_sizes.py: the "pad" and "resize" batch policies and the compute batch, on the real example models."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import BadInput, ConfigError
from tests.helpers.two_inputs import build_two_inputs, two_inputs_info
from workers.models.registry import ModelEntry, Registry
from workers.models.runtimes import litert
from workers.models.runtimes.batch_sizes import bucket_for, bucket_sizes, choose_compute_batch
from workers.models.runtimes.litert import LiteRTRuntime

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["fp32", "int8"]
_models: Path | None = None


@pytest.fixture(scope="module", autouse=True)
def _example_models(models_dir: Path) -> None:
    """The digits example models, built once per test session (tests/conftest.py)."""
    global _models
    _models = models_dir


def digits(variant: str) -> ModelEntry:
    assert _models is not None
    return Registry(_models).get("digits", variant)


def images(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)}


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request: pytest.FixtureRequest) -> tuple[LiteRTRuntime, LiteRTRuntime]:
    entry = digits(request.param)
    return (
        LiteRTRuntime(entry, threads=1, batch_policy="pad"),
        LiteRTRuntime(entry, threads=1, batch_policy="resize"),
    )


@pytest.mark.parametrize("n", [1, 3, 5, 17, 64])
def test_pad_and_resize_give_identical_outputs_for_real_rows(pair, n):
    pad, resize = pair
    x = images(n, seed=n)
    got, want = pad.predict(x), resize.predict(x)
    assert set(got) == set(want) == {"probs"}
    assert got["probs"].shape == (n, 10)
    assert got["probs"].dtype == np.float32
    np.testing.assert_array_equal(got["probs"], want["probs"])


def test_a_padded_row_matches_the_row_run_alone(pair):
    """Row independence, the premise of padding: row i of a padded batch == row i alone."""
    pad, resize = pair
    x = images(5, seed=7)
    batch = pad.predict(x)["probs"]  # 5 real rows + 3 pad rows in bucket 8
    for i in range(5):
        np.testing.assert_array_equal(batch[i], resize.predict({"image": x["image"][i : i + 1]})["probs"][0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_pad_allocates_each_bucket_once(monkeypatch, variant):
    allocs: Counter[int] = Counter()
    base = litert.interpreter_class()

    class Counting(base):  # type: ignore[misc, valid-type]
        def allocate_tensors(self) -> None:
            allocs[id(self)] += 1
            super().allocate_tensors()

    monkeypatch.setattr(litert, "interpreter_class", lambda: Counting)
    rt = LiteRTRuntime(digits(variant), threads=1, batch_policy="pad")
    sizes = [1, 3, 5, 17, 64, 3, 5, 17, 64, 1, 2, 33, 9, 64, 2, 7]
    for n in sizes * 2:
        assert rt.predict(images(n))["probs"].shape == (n, 10)
    assert rt.buckets == [1, 2, 4, 8, 16, 32, 64]
    assert len(allocs) == len(rt.buckets)  # one interpreter per bucket...
    assert set(allocs.values()) == {1}  # ...each allocated exactly once
    assert rt.allocations == len(rt.buckets)


def test_resize_reallocates_on_every_shape_change():
    rt = LiteRTRuntime(digits("fp32"), threads=1, batch_policy="resize")
    assert rt.allocations == 1
    for n in [1, 3, 3, 5, 1]:
        rt.predict(images(n))
    assert rt.allocations == 1 + 3  # 1->3, 3->5, 5->1
    assert rt.buckets == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_batch_bigger_than_the_largest_bucket_runs_in_chunks(variant):
    entry = digits(variant)
    resize = LiteRTRuntime(entry, threads=1, batch_policy="resize")
    x = images(150, seed=3)
    want = resize.predict(x)["probs"]
    pad = LiteRTRuntime(entry, threads=1, batch_policy="pad")
    assert pad.max_bucket == entry.info.max_batch_size == 64
    got = pad.predict(x)["probs"]  # 64 + 64 + 22 (in bucket 32)
    assert got.shape == (150, 10)
    np.testing.assert_array_equal(got, want)
    assert max(pad.buckets) == 64
    # A model whose max_batch_size is not a power of two: buckets 1, 2, 4, 6.
    small = dataclasses.replace(entry, info=dataclasses.replace(entry.info, max_batch_size=6))
    pad6 = LiteRTRuntime(small, threads=1, batch_policy="pad")
    np.testing.assert_array_equal(pad6.predict({"image": x["image"][:17]})["probs"], want[:17])
    assert pad6.buckets == [1, 6]  # 17 = 6 + 6 + 5 (in bucket 6)
    np.testing.assert_array_equal(pad6.predict({"image": x["image"][:3]})["probs"], want[:3])
    assert pad6.buckets == [1, 4, 6]


def test_warmup_creates_the_buckets_in_advance():
    rt = LiteRTRuntime(digits("int8"), threads=1, batch_policy="pad")
    rt.warmup(10)
    assert rt.buckets == [1, 2, 4, 8, 16]
    rt.warmup(64)
    assert rt.buckets == [1, 2, 4, 8, 16, 32, 64]
    allocated = rt.allocations
    assert allocated == 7
    for n in [1, 2, 3, 9, 20, 40, 64]:
        rt.predict(images(n))
    assert rt.allocations == allocated  # no batch paid for an allocation
    rt.warmup(64)
    assert rt.allocations == allocated


def test_warmup_above_the_models_max_batch_size_raises_the_largest_bucket():
    entry = digits("fp32")
    rt = LiteRTRuntime(entry, threads=1, batch_policy="pad")
    rt.warmup(100)  # a worker told to form batches of up to 100
    assert rt.buckets == [1, 2, 4, 8, 16, 32, 64, 100]
    allocated = rt.allocations
    x = images(150, seed=5)
    want = LiteRTRuntime(entry, threads=1, batch_policy="resize").predict(x)["probs"]
    np.testing.assert_array_equal(rt.predict({"image": x["image"][:100]})["probs"], want[:100])
    np.testing.assert_array_equal(rt.predict(x)["probs"], want)  # 100 + 50 (in bucket 64)
    np.testing.assert_array_equal(rt.predict({"image": x["image"][:70]})["probs"], want[:70])  # bucket 100
    assert rt.allocations == allocated


def test_warmup_for_resize_is_one_allocation_at_the_largest_size():
    rt = LiteRTRuntime(digits("fp32"), threads=1, batch_policy="resize")
    rt.warmup(64)
    assert rt.allocations == 2
    rt.warmup(64)
    assert rt.allocations == 2
    rt.predict(images(64))
    assert rt.allocations == 2


def test_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="batch_policy"):
        LiteRTRuntime(digits("fp32"), threads=1, batch_policy="bucket")


def test_bucket_arithmetic():
    assert bucket_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bucket_sizes(8) == [1, 2, 4, 8]
    assert bucket_sizes(6) == [1, 2, 4, 6]
    assert bucket_sizes(1) == [1]
    assert [bucket_for(n, 64) for n in [0, 1, 2, 3, 5, 17, 33, 64]] == [1, 1, 2, 4, 8, 32, 64, 64]
    assert [bucket_for(n, 6) for n in [3, 4, 5, 6]] == [4, 4, 6, 6]


# -- a model with two inputs (built with TensorFlow in a subprocess) --------------------


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> ModelEntry:
    pytest.importorskip("tensorflow", reason="building the two-input model needs tensorflow")
    path = build_two_inputs(tmp_path_factory.mktemp("two") / "model.tflite")
    return ModelEntry(info=two_inputs_info(), path=path, sha256="")


def test_multi_input_models_pad_every_input_along_the_shared_batch_axis(two_inputs):
    pad = LiteRTRuntime(two_inputs, threads=1, batch_policy="pad")
    resize = LiteRTRuntime(two_inputs, threads=1, batch_policy="resize")
    rng = np.random.default_rng(1)
    for n in [1, 3, 8, 11]:
        x = {"a": rng.normal(size=(n, 3)).astype(np.float32), "b": rng.normal(size=(n, 2)).astype(np.float32)}
        got, want = pad.predict(x), resize.predict(x)
        assert got["y"].shape == (n, 3) and got["s"].shape == (n, 1)
        for k in ("y", "s"):
            np.testing.assert_array_equal(got[k], want[k])
        np.testing.assert_allclose(got["s"][:, 0], x["a"].sum(1), rtol=1e-5)
    assert pad.buckets == [1, 4, 8]
    with pytest.raises(BadInput, match="batch axis"):
        pad.predict({"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 2), np.float32)})


# --- the compute batch: the most rows one model call runs --------------------------------


def test_the_compute_batch_is_the_largest_size_within_the_tolerance_of_the_fastest():
    per_input = {1: 5.5, 2: 5.6, 4: 6.0, 8: 6.5}  # MobileNetV2-like: small calls are faster
    assert choose_compute_batch(per_input, tolerance=0.05) == 2
    assert choose_compute_batch(per_input, tolerance=0.0) == 1
    # digits-like: the whole batch is within it, so batches run whole (no extra calls)
    assert choose_compute_batch({1: 24.0, 8: 22.7, 32: 22.2, 64: 22.8}, tolerance=0.05) == 64


@pytest.mark.parametrize("policy", ["resize", "pad"])
def test_a_batch_bigger_than_the_compute_batch_runs_in_calls_of_it_with_the_same_outputs(policy):
    rt = LiteRTRuntime(digits("fp32"), threads=1, batch_policy=policy)
    x = images(37, seed=7)
    want = rt.predict(x)["probs"]
    calls = []
    real_invoke = type(rt)._predict_resize if policy == "resize" else type(rt)._predict_bucket

    def counting(self, inputs, *rest):
        calls.append(self._batch_size(inputs))
        return real_invoke(self, inputs, *rest)

    rt.compute_batch = 16
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(rt), "_predict_resize" if policy == "resize" else "_predict_bucket", counting)
        got = rt.predict(x)["probs"]
    assert calls == [16, 16, 5]
    np.testing.assert_array_equal(got, want)


def test_calibration_times_each_size_up_to_the_workers_batch_and_keeps_one_of_them():
    rt = LiteRTRuntime(digits("fp32"), threads=1)
    chosen = rt.calibrate_compute_batch(24)
    assert sorted(rt.calibration) == [1, 2, 4, 8, 16, 24]
    assert all(t > 0 for t in rt.calibration.values())
    assert chosen == rt.compute_batch == choose_compute_batch(rt.calibration)
    x = images(50, seed=3)
    np.testing.assert_allclose(
        rt.predict(x)["probs"], LiteRTRuntime(digits("fp32"), threads=1).predict(x)["probs"], rtol=1e-6
    )
