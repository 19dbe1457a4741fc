"""Registering users' models, multi-input/output models, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import ROOT, WorkerProcess

pytestmark = pytest.mark.integration


def inferq(
    settings: Settings, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**os.environ, **settings.env()},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"inferq {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-input, two-output TFLite model, like a detector (boxes + scores)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    a = tf.keras.Input((8,), name="features")
    b = tf.keras.Input((4,), name="mask")
    h = tf.keras.layers.Dense(16, activation="relu")(tf.keras.layers.Concatenate()([a, b]))
    model = tf.keras.Model(
        {"features": a, "mask": b},
        {
            "boxes": tf.keras.layers.Dense(4, name="boxes")(h),
            "scores": tf.keras.layers.Dense(3, activation="softmax", name="scores")(h),
        },
    )
    out = tmp_path_factory.mktemp("detector")
    model.export(str(out / "saved"), format="tf_saved_model", verbose=False)
    path = out / "detector.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(out / "saved")).convert())
    return path


def test_multi_output_model_round_trips_all_outputs_by_name(
    detector_file: Path, settings: Settings, tmp_path: Path
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    added = inferq(settings, "models", "add", "detector", str(detector_file), "--force")
    assert "added detector:fp32" in added.stdout
    listing = json.loads(inferq(settings, "models", "list", "--json").stdout)
    det = next(m for m in listing if m["name"] == "detector")
    assert [i["name"] for i in det["inputs"]] == ["features", "mask"]
    assert [o["name"] for o in det["outputs"]] == ["boxes", "scores"]

    worker = WorkerProcess(settings, ["detector:fp32"], tmp_path / "worker.log")
    try:
        with Client(settings) as client:
            worker.wait_ready(client)
            rng = np.random.default_rng(0)
            x = {
                "features": rng.normal(size=8).astype(np.float32),
                "mask": rng.normal(size=4).astype(np.float32),
            }
            res = client.submit("detector", x).wait(timeout=30)
        runner = Interpreter(model_path=str(detector_file)).get_signature_runner()
        direct = runner(features=x["features"][None], mask=x["mask"][None])
        assert set(res.outputs) == {"boxes", "scores"}
        np.testing.assert_array_equal(res.outputs["boxes"], direct["boxes"][0])
        np.testing.assert_array_equal(res.outputs["scores"], direct["scores"][0])
    finally:
        worker.stop()


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "x.y", ".hidden", "/tmp/evil"])
def test_models_add_refuses_names_that_escape_the_models_folder(
    name: str, detector_file: Path, settings: Settings
) -> None:
    proc = inferq(settings, "models", "add", name, str(detector_file), check=False)
    assert proc.returncode == 2
    assert "model name must match" in proc.stderr
    assert not (settings.models_dir.parent / "evil").exists()


def test_models_add_refuses_a_file_that_is_not_a_model(settings: Settings, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a flatbuffer at all")
    proc = inferq(settings, "models", "add", "bogus", str(bogus), check=False)
    assert proc.returncode == 2
    assert "not a loadable TFLite model" in proc.stderr and str(bogus) in proc.stderr


def test_worker_fails_fast_naming_the_missing_model(settings: Settings) -> None:
    proc = inferq(settings, "worker", "--models", "nosuch", check=False, timeout=60)
    assert proc.returncode == 2
    assert "no model 'nosuch'" in proc.stderr and str(settings.models_dir.resolve()) in proc.stderr


def test_worker_fails_fast_on_a_broken_model_file_naming_its_path(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "models"
    src = settings.models_dir / "digits" / "int8"
    (broken / "digits" / "int8").mkdir(parents=True)
    (broken / "digits" / "int8" / "meta.json").write_text((src / "meta.json").read_text())
    (broken / "digits" / "int8" / "model.tflite").write_bytes(b"\x00" * 64)
    proc = inferq(settings.with_(models_dir=broken), "worker", check=False, timeout=60)
    assert proc.returncode == 2
    assert str(broken / "digits" / "int8" / "model.tflite") in proc.stderr


def test_tflite_only_worker_never_imports_tensorflow_and_stays_small(digits_tflite_worker) -> None:
    maps = Path(f"/proc/{digits_tflite_worker.proc.pid}/maps").read_text()
    assert "tensorflow" not in maps.lower(), "a TFLite-only worker mapped TensorFlow's libraries"
    rss = int(Path(f"/proc/{digits_tflite_worker.proc.pid}/statm").read_text().split()[1]) * os.sysconf(
        "SC_PAGE_SIZE"
    )
    assert rss < 300 * 2**20, f"TFLite-only worker RSS {rss / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def digits_tflite_worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    w = WorkerProcess(settings, ["digits:fp32", "digits:int8"], tmp_path_factory.mktemp("tfl") / "worker.log")
    with Client(settings) as c:
        w.wait_ready(c)
    yield w
    w.stop()


def test_cli_submit_wait_json_then_result_by_id(
    digits_tflite_worker, settings: Settings, tmp_path: Path
) -> None:
    x = np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")[7]
    np.save(tmp_path / "x.npy", x)
    out = json.loads(
        inferq(
            settings,
            "submit",
            "digits:int8",
            "--input",
            str(tmp_path / "x.npy"),
            "--wait",
            "--json",
            "--no-cache",
        ).stdout
    )
    assert out["model"] == "digits" and out["variant"] == "int8" and len(out["outputs"]["probs"]) == 10
    again = json.loads(inferq(settings, "result", out["job_id"], "--json").stdout)
    assert again["outputs"] == out["outputs"]
    queued = json.loads(
        inferq(settings, "submit", "digits:int8", "--input", str(tmp_path / "x.npy"), "--json").stdout
    )
    assert len(queued["job_id"]) == 32
    waited = json.loads(inferq(settings, "result", queued["job_id"], "--wait", "--json").stdout)
    np.testing.assert_allclose(waited["outputs"]["probs"], out["outputs"]["probs"])


def test_cli_submit_reads_png_and_json_inputs(
    digits_tflite_worker, settings: Settings, tmp_path: Path
) -> None:
    from PIL import Image

    img = (np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")[8, :, :, 0] * 255).astype(
        np.uint8
    )
    Image.fromarray(img).save(tmp_path / "d.png")
    png = json.loads(
        inferq(
            settings, "submit", "digits:fp32", "--input", str(tmp_path / "d.png"), "--wait", "--json"
        ).stdout
    )
    (tmp_path / "d.json").write_text(json.dumps((img[..., None] / 255.0).tolist()))
    js = json.loads(
        inferq(
            settings, "submit", "digits:fp32", "--input", str(tmp_path / "d.json"), "--wait", "--json"
        ).stdout
    )
    assert np.argmax(png["outputs"]["probs"]) == np.argmax(js["outputs"]["probs"])


def test_cli_status_lists_workers_models_and_queue_depths(digits_tflite_worker, settings: Settings) -> None:
    doc = json.loads(inferq(settings, "status", "--json").stdout)
    assert any(set(w["models"]) >= {"digits:fp32", "digits:int8"} for w in doc["workers"])
    assert doc["models"]["digits:int8"]["queue"] == "inferq.digits.int8"
    assert isinstance(doc["models"]["digits:int8"]["depth"], int)


def test_worker_concurrency_starts_that_many_processes(settings: Settings, tmp_path: Path) -> None:
    w = WorkerProcess(settings, ["digits:int8"], tmp_path / "w.log", "--concurrency", "2")
    try:
        with Client(settings) as c:
            w.wait_ready(c, count=2)
            x = np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")[:40]
            jobs = [c.submit("digits", xi, variant="int8", no_cache=True) for xi in x]
            results = c.wait_all(jobs, timeout=60)
            assert all(not isinstance(r, Exception) for r in results)
    finally:
        w.stop()
