"""The examples run for real: examples/fastapi_backend under uvicorn, examples/node/infer.mjs
under node, against a real gateway, worker and redis-server.

The examples are documentation; these tests keep them true. Their answers are compared
with LiteRT's own outputs for the same inputs (``tests/helpers/litert_reference.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ops.local.redis_server import free_port
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, started_worker
from tests.helpers.gateway import GatewayProcess, started_gateway
from tests.helpers.litert_reference import litert_outputs
from tests.helpers.served import ROOT, ServedProcess

pytestmark = pytest.mark.integration

KEY = "example-key-0123456789"
NODE = shutil.which("node")
NODE_SCRIPT = ROOT / "examples" / "node" / "infer.mjs"
ALICE, BOB = {"X-User": "alice"}, {"X-User": "bob"}


class ExampleBackend(ServedProcess):
    """``uvicorn main:app --app-dir examples/fastapi_backend``, as its README runs it."""

    name = "the FastAPI example"
    live_path = "/openapi.json"

    def __init__(self, settings: Settings, log: Path) -> None:
        port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", "examples/fastapi_backend"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        super().__init__(cmd, {**os.environ, **settings.env()}, log, port)


@pytest.fixture(scope="module")
def ex_settings(settings: Settings) -> Settings:
    return on_db(settings, 14).with_(api_keys=KEY)


@pytest.fixture(scope="module")
def worker(ex_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(ex_settings, ["digits:fp32"], tmp_path_factory.mktemp("examples") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def backend(
    ex_settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExampleBackend]:
    app = ExampleBackend(ex_settings, tmp_path_factory.mktemp("examples") / "backend.log").wait_live()
    yield app
    app.stop()  # SIGTERM: uvicorn shuts down, then re-raises the signal (exit status -15)
    log = app.log_text()
    assert "Application shutdown complete" in log and "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def gateway(
    ex_settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = started_gateway(ex_settings, tmp_path_factory.mktemp("examples") / "gateway.log")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def litert(models_dir: Path) -> Any:
    model = models_dir / "digits" / "fp32" / "model.tflite"
    return lambda x: litert_outputs(model, {"image": np.asarray(x, np.float32).reshape(-1, 28, 28, 1)})[
        "probs"
    ]


_rng = np.random.default_rng(2015)


def image() -> np.ndarray:
    """An input no other test sends: computed by the worker, never a cache hit."""
    return _rng.random((28, 28, 1), dtype=np.float32)


# --- the FastAPI backend ----------------------------------------------------------------


def poll(http: httpx.Client, url: str, headers: dict[str, str], timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http.get(url, headers=headers)
        if r.status_code != 202:
            return r
        assert r.json()["status"] in ("queued", "running") and r.headers["retry-after"] == "1"
        time.sleep(0.05)
    raise AssertionError(f"{url} still pending after {timeout} s")


def test_fastapi_predict_answers_202_then_polling_gives_the_models_outputs(
    backend: ExampleBackend, litert: Any
):
    x = image()
    with httpx.Client(base_url=backend.url, timeout=30) as http:
        r = http.post("/predict", json={"model": "digits", "input": x.tolist()}, headers=ALICE)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and job["id"].startswith("h-")
        assert r.headers["location"] == job["url"] == f"/predict/{job['id']}"
        assert r.headers["retry-after"] == "1"
        done = poll(http, job["url"], ALICE)
    assert done.status_code == 200, done.text
    state = done.json()
    assert state["id"] == job["id"] and state["status"] == "success" and state["cached"] is False
    assert state["model"] == "digits" and state["variant"] == "fp32"
    assert state["timing_ms"]["compute"] >= 0
    np.testing.assert_allclose(
        np.asarray([state["outputs"]["probs"]], np.float32), litert(x), rtol=1e-6, atol=1e-7
    )


def test_fastapi_the_same_input_again_answers_200_from_the_cache(backend: ExampleBackend, litert: Any):
    x = image()
    with httpx.Client(base_url=backend.url, timeout=30) as http:
        first = http.post("/predict", json={"input": x.tolist()}, headers=ALICE)
        assert first.status_code == 202
        assert poll(http, first.json()["url"], ALICE).status_code == 200
        again = http.post("/predict", json={"input": x.tolist()}, headers=BOB)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "success" and again.json()["cached"] is True
    assert "location" not in again.headers
    np.testing.assert_allclose(
        np.asarray([again.json()["outputs"]["probs"]], np.float32), litert(x), rtol=1e-6, atol=1e-7
    )


def test_fastapi_another_users_job_or_a_made_up_id_is_404(backend: ExampleBackend):
    with httpx.Client(base_url=backend.url, timeout=30) as http:
        r = http.post("/predict", json={"input": image().tolist()}, headers=ALICE)
        url = r.json()["url"]
        assert poll(http, url, ALICE).status_code == 200
        for path, headers in (
            (url, BOB),
            (url, {}),  # the anonymous user
            ("/predict/h-" + "0" * 32, ALICE),
            ("/predict/not-a-handle!", ALICE),
        ):
            answer = http.get(path, headers=headers)
            assert answer.status_code == 404, (path, headers, answer.text)
            assert answer.json() == {"error": "no such job"}


def test_fastapi_a_wrong_shape_or_model_is_refused_naming_what_was_expected(backend: ExampleBackend):
    with httpx.Client(base_url=backend.url, timeout=30) as http:
        r = http.post("/predict", json={"input": np.zeros((28, 28, 3)).tolist()}, headers=ALICE)
        assert r.status_code == 400, r.text
        assert "image" in r.json()["error"] and "expected shape [28, 28, 1]" in r.json()["error"]
        r = http.post("/predict", json={"model": "nope", "input": [0.0]}, headers=ALICE)
        assert r.status_code == 404 and "nope" in r.json()["error"]


# --- the Node.js script -----------------------------------------------------------------

# Under CI the test command installs Node.js (scripts/bootstrap.sh --with-browser): a
# missing node there is a broken setup, not a reason to skip.
needs_node = pytest.mark.skipif(
    NODE is None and os.environ.get("CI") != "true", reason="node is not installed"
)


def run_node(gateway: GatewayProcess, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    env = {**os.environ, "INFERQ_URL": gateway.url, "INFERQ_API_KEY": key}
    return subprocess.run(
        [NODE, str(NODE_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )


@needs_node
def test_node_script_reads_metadata_infers_and_polls_a_job_honouring_retry_after(
    gateway: GatewayProcess, litert: Any
):
    proc = run_node(gateway, "--json")
    assert proc.returncode == 0, proc.stderr + gateway.log_text()[-2000:]
    out = json.loads(proc.stdout)
    assert out["metadata"]["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    [sent] = out["infer"]["inputs"]
    assert sent["shape"] == [1, 28, 28, 1] and len(sent["data"]) == 784
    response = out["infer"]["response"]
    assert response["id"] == "node-1" and response["parameters"]["cached"] == 0
    [probs] = response["outputs"]
    np.testing.assert_allclose(
        np.asarray([probs["data"]], np.float32), litert(sent["data"]), rtol=1e-6, atol=1e-7
    )
    job = out["job"]
    assert job["state"]["status"] == "success" and job["state"]["cached"] is False
    # A fresh input: 202, then polls, each after the Retry-After (1 s) the gateway asked for.
    assert job["polls"] >= 1 and job["elapsed_ms"] >= 1000 * job["polls"]
    [job_probs] = job["state"]["outputs"]
    np.testing.assert_allclose(
        np.asarray(job_probs["data"], np.float32).reshape(1, 10),
        litert(job["inputs"][0]["data"]),
        rtol=1e-6,
        atol=1e-7,
    )


@needs_node
def test_node_script_prints_a_readable_report(gateway: GatewayProcess):
    proc = run_node(gateway)
    assert proc.returncode == 0, proc.stderr
    report = proc.stdout
    for line in ("model digits", "input  image FP32[-1,28,28,1]", "infer (id node-1", "job h-", "job done"):
        assert line in report, report
    assert report.count("argmax") == 2


@needs_node
def test_node_script_exits_1_with_the_gateways_message_on_a_wrong_key(gateway: GatewayProcess):
    proc = run_node(gateway, key="not-the-key")
    assert proc.returncode == 1
    assert "401" in proc.stderr and "the API key is not valid" in proc.stderr, proc.stderr
    assert "at " not in proc.stderr  # a message, not a stack trace
