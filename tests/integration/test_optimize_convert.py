"""``inferq models convert``: every mode, from a SavedModel and from a ``.tflite`` alone,
makes a model that a real worker serves and that agrees with fp32; bad input is one line.

Conversions run once per module (about a minute with TensorFlow on two cores); one
worker then serves every variant made. The digits variants are calibrated on the
first 150 held-out digits and judged on the other 210.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, started_worker
from tests.helpers.cli import inferq, one_line_error
from workers.models.optimize.make import Converted, convert_model
from workers.models.optimize.modes import Mode
from workers.models.registry import Registry

pytestmark = pytest.mark.integration

CALIBRATION_ROWS = 150


@dataclass(frozen=True)
class Case:
    variant: str
    source: str
    mode: Mode
    #: Least share of the 210 judged digits whose top-1 matches fp32's.
    min_top1: float
    #: Largest mean difference from fp32's class probabilities (a single borderline
    #: digit may move by 0.5 under int8 while its top-1 still agrees: the mean is the test).
    mean_abs: float


CASES = [
    # TensorFlow's converter, from the SavedModel
    Case("tf-fp32", "digits:savedmodel", Mode.FP32, 1.0, 1e-6),
    Case("tf-fp16", "digits:savedmodel", Mode.FP16, 0.995, 1e-4),
    Case("tf-dynamic-int8", "digits:savedmodel", Mode.DYNAMIC_INT8, 0.98, 0.005),
    Case("tf-int8", "digits:savedmodel", Mode.INT8, 0.98, 0.005),
    Case("tf-int16x8", "digits:savedmodel", Mode.INT16X8, 0.99, 0.005),
    Case("tf-weight-only", "digits:savedmodel", Mode.WEIGHT_ONLY, 0.99, 0.005),
    # the LiteRT quantizer, from the fp32 .tflite alone
    Case("q-fp16", "digits:fp32", Mode.FP16, 0.995, 1e-4),
    Case("q-dynamic-int8", "digits:fp32", Mode.DYNAMIC_INT8, 0.98, 0.005),
    Case("q-int8", "digits:fp32", Mode.INT8, 0.98, 0.005),
    Case("q-int16x8", "digits:fp32", Mode.INT16X8, 0.99, 0.005),
    Case("q-weight-only", "digits:fp32", Mode.WEIGHT_ONLY, 0.99, 0.005),
]


@dataclass
class Made:
    settings: Settings
    registry: Registry
    digits: dict[str, Converted]
    judged: np.ndarray
    foreign: Path
    foreign_x: np.ndarray
    foreign_cli: dict[str, object]


def _foreign_model(folder: Path) -> tuple[Path, np.ndarray]:
    """A tiny classifier inferq did not build: trained here, written as .keras and .tflite."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    y = (x @ rng.normal(size=(16, 4))).argmax(1)
    inp = tf.keras.Input((16,), name="features")
    h = tf.keras.layers.Dense(32, activation="relu")(inp)
    model = tf.keras.Model(inp, {"scores": tf.keras.layers.Dense(4, activation="softmax", name="scores")(h)})
    model.compile("adam", {"scores": "sparse_categorical_crossentropy"})
    model.fit(x, {"scores": y}, epochs=30, batch_size=32, verbose=0)
    model.save(folder / "tiny.keras")
    model.export(str(folder / "saved"), format="tf_saved_model", verbose=False)
    (folder / "tiny.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved")).convert()
    )
    np.save(folder / "calibration.npy", x[:300])
    return folder / "tiny.tflite", x[300:]


@pytest.fixture(scope="module")
def made(settings: Settings, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Made:
    root = tmp_path_factory.mktemp("optimize")
    models = root / "models"
    shutil.copytree(models_dir / "digits", models / "digits")  # the shared folder stays as it is
    s = on_db(settings, 5).with_(models_dir=models)
    registry = Registry(models)
    heldout = np.load(models / "digits" / "data" / "heldout_x.npy")
    np.save(root / "calibration.npy", heldout[:CALIBRATION_ROWS])
    digits = {
        c.variant: convert_model(
            registry, c.source, c.mode, calibration=root / "calibration.npy", variant=c.variant
        )
        for c in CASES
    }
    foreign, foreign_x = _foreign_model(root)
    from workers.boot.cli import add_model

    add_model(registry, "tiny", foreign, "fp32", None)
    cli = inferq(
        s,
        "models", "convert", str(foreign), "--to", "int8", "--calibration", str(root / "calibration.npy"),
        "--name", "tiny", "--json",
        timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    convert_model(registry, str(foreign), Mode.DYNAMIC_INT8, name="tiny")
    convert_model(registry, str(root / "tiny.keras"), Mode.FP16, name="tiny", variant="keras-fp16")
    return Made(s, registry, digits, heldout[CALIBRATION_ROWS:], foreign, foreign_x, json.loads(cli.stdout))


@pytest.fixture(scope="module")
def worker(made: Made, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    models = ["digits:fp32", *(f"digits:{c.variant}" for c in CASES)]
    models += ["tiny:fp32", "tiny:int8", "tiny:dynamic-int8", "tiny:keras-fp16"]
    w = started_worker(made.settings, models, tmp_path_factory.mktemp("optimize-logs") / "worker.log")
    yield w
    w.stop()


def _served(settings: Settings, model: str, variant: str, xs: np.ndarray, output: str) -> np.ndarray:
    with Client(settings) as client:
        results = client.wait_all(client.submit_many(model, xs, variant=variant), timeout=120)
    bad = [r for r in results if isinstance(r, Exception)]
    assert not bad, bad[:3]
    return np.stack([r.outputs[output] for r in results])  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def fp32_probs(made: Made, worker: WorkerProcess) -> np.ndarray:
    return _served(made.settings, "digits", "fp32", made.judged, "probs")


@pytest.mark.parametrize("case", CASES, ids=[c.variant for c in CASES])
def test_each_mode_serves_through_a_worker_and_agrees_with_fp32(
    case: Case, made: Made, worker: WorkerProcess, fp32_probs: np.ndarray
) -> None:
    probs = _served(made.settings, "digits", case.variant, made.judged, "probs")
    top1 = float((probs.argmax(1) == fp32_probs.argmax(1)).mean())
    mean = float(np.abs(probs - fp32_probs).mean())
    assert top1 >= case.min_top1, f"{case.variant}: top-1 agreement {top1:.4f} < {case.min_top1}"
    assert mean <= case.mean_abs, f"{case.variant}: mean |p - p_fp32| {mean:.5f} > {case.mean_abs}"


def test_int8_is_at_most_30_percent_of_fp32s_size(made: Made) -> None:
    fp32 = made.registry.get("digits", "fp32").info.size_bytes
    for variant in ("tf-int8", "q-int8", "q-dynamic-int8", "tf-dynamic-int8"):
        size = made.digits[variant].entry.info.size_bytes
        assert size <= 0.30 * fp32, f"{variant}: {size} bytes is {size / fp32:.0%} of fp32's {fp32}"


def test_each_variant_has_its_own_version_and_cache_entries(made: Made, worker: WorkerProcess) -> None:
    versions = {v: m.entry.info.version for v, m in made.digits.items()}
    versions["fp32"] = made.registry.get("digits", "fp32").info.version
    assert len(set(versions.values())) == len(versions), versions
    x = made.judged[0] * np.float32(0.999)  # an input no other test sent
    with Client(made.settings) as client:
        first = {v: client.submit("digits", x, variant=v) for v in ("fp32", "tf-int8", "q-int8")}
        results = {v: j.wait(timeout=30) for v, j in first.items()}
        again = client.submit("digits", x, variant="tf-int8")
    assert len({j.id for j in first.values()}) == 3
    assert not any(r.cached for r in results.values())
    assert {v: r.version for v, r in results.items()} == {v: versions[v] for v in results}
    assert again.id == first["tf-int8"].id and again.cached


def test_a_converted_variant_keeps_the_labels_and_batching_and_says_how_it_was_made(made: Made) -> None:
    fp32 = made.registry.get("digits", "fp32").info
    entry = made.registry.get("digits", "tf-int8")
    assert (entry.info.labels, entry.info.max_batch_size) == (fp32.labels, fp32.max_batch_size)
    meta = json.loads((entry.path.parent / "meta.json").read_text())
    assert meta["converted"] == {
        "from": "digits:savedmodel",
        "mode": "int8",
        "tool": "tflite-converter",
        "calibration": meta["converted"]["calibration"],
        "calibration_samples": CALIBRATION_ROWS,
    }
    # Full integer, like the example's int8, from either tool; the worker applies the scales.
    assert entry.info.inputs[0].tensor_dtype == "int8" and entry.info.inputs[0].quantization is not None
    assert made.registry.get("digits", "q-int8").info.inputs[0].tensor_dtype == "int8"
    assert made.registry.get("digits", "q-dynamic-int8").info.inputs[0].tensor_dtype == "float32"


def test_a_tflite_inferq_did_not_build_converts_alone_and_serves(made: Made, worker: WorkerProcess) -> None:
    assert made.foreign_cli["from"] == str(made.foreign) and made.foreign_cli["tool"] == "litert-quantizer"
    assert made.foreign_cli["calibration_samples"] == 256  # the default cap, of 300 given
    ref = _served(made.settings, "tiny", "fp32", made.foreign_x, "scores")
    # Mean |p - p_fp32| allowed: the tiny MLP's int8 activations are coarse (~0.04 here).
    for variant, mean_abs in (("int8", 0.06), ("dynamic-int8", 0.02), ("keras-fp16", 1e-3)):
        got = _served(made.settings, "tiny", variant, made.foreign_x, "scores")
        top1 = float((got.argmax(1) == ref.argmax(1)).mean())
        mean = float(np.abs(got - ref).mean())
        assert top1 >= 0.95, f"tiny:{variant} top-1 agreement {top1:.3f}"
        assert mean <= mean_abs, f"tiny:{variant}: mean |p - p_fp32| {mean:.4f} > {mean_abs}"


# -- bad input: one line, exit 2, naming the problem ---------------------------------------


def test_int8_without_calibration_is_refused_naming_the_modes_that_need_it(made: Made) -> None:
    for source in ("digits:savedmodel", str(made.foreign)):
        proc = inferq(
            made.settings, "models", "convert", source, "--to", "int8", "--name", "digits", "--variant", "x"
        )
        line = one_line_error(proc, "CalibrationRequired")
        assert "--to int8 needs calibration data" in line and "modes that need it: int16x8, int8" in line


def test_a_corrupt_tflite_is_named(made: Made, tmp_path: Path) -> None:
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    proc = inferq(made.settings, "models", "convert", str(bad), "--to", "dynamic-int8", "--name", "broken")
    line = one_line_error(proc, "UnreadableModel")
    assert str(bad) in line and "not a loadable TFLite model" in line
    assert not (made.registry.root / "broken").exists()


def test_a_corrupt_savedmodel_is_named(made: Made, tmp_path: Path) -> None:
    bad = tmp_path / "saved"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"\x08\x96\x01 this is not a SavedModel protobuf")
    proc = inferq(
        made.settings, "models", "convert", str(bad), "--to", "fp16", "--name", "broken", timeout=180
    )
    line = one_line_error(proc, "UnreadableModel")
    assert str(bad) in line and "not a loadable SavedModel" in line


def test_a_model_with_an_op_tflite_lacks_is_refused_naming_the_op(made: Made, tmp_path: Path) -> None:
    import tensorflow as tf

    class Svd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4], tf.float32, name="m")])
        def __call__(self, m: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"s": tf.linalg.svd(m, compute_uv=False)}

    module = Svd()
    tf.saved_model.save(module, str(tmp_path / "svd"), signatures={"serving_default": module.__call__})
    proc = inferq(
        made.settings,
        "models",
        "convert",
        str(tmp_path / "svd"),
        "--to",
        "fp32",
        "--name",
        "svd",
        timeout=180,
    )
    line = one_line_error(proc, "UnsupportedOps")
    assert "Svd" in line and "no builtin kernel" in line


def test_calibration_of_the_wrong_shape_is_refused_naming_both_shapes(made: Made, tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((10, 8, 8, 1), np.float32))
    proc = inferq(
        made.settings, "models", "convert", "digits:fp32", "--to", "int8", "--calibration", str(tmp_path / "small.npy"),
        "--variant", "never",
    )  # fmt: skip
    line = one_line_error(proc, "BadInput")
    assert "image[28,28,1]:float32" in line and "[10, 8, 8, 1]" in line


def test_an_existing_variant_is_not_replaced_without_force(made: Made) -> None:
    proc = inferq(
        made.settings, "models", "convert", "digits:fp32", "--to", "dynamic-int8", "--variant", "q-int8"
    )
    line = one_line_error(proc, "BadInput")
    assert "digits:q-int8 already exists" in line and "--force" in line


def test_calibration_given_to_a_mode_that_does_not_use_it_is_said_not_dropped(
    made: Made, tmp_path: Path
) -> None:
    np.save(tmp_path / "x.npy", made.judged[:8])
    proc = inferq(
        made.settings, "models", "convert", "digits:fp32", "--to", "fp16", "--calibration", str(tmp_path / "x.npy"),
        "--variant", "noted-fp16",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "inferq: note: --to fp16 does not calibrate; --calibration is not used" in proc.stderr
    assert "digits:noted-fp16" in proc.stdout
