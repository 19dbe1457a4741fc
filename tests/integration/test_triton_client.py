"""The gateway's protocol, checked by an independent client: NVIDIA's ``tritonclient.http``.

Triton's own client encodes requests and decodes answers with its own code (JSON and
the binary tensor data extension, gevent and aiohttp transports); if it reads inferq
unchanged, so will the protocol's other clients. It runs in a child process
(``tests/helpers/triton_probe.py``) against a real gateway, worker and redis-server,
and its outputs must equal LiteRT's own, run here on the same model file: no inferq
code sits between the reference and the model.

tritonclient 2.73 pins ``ml-dtypes<=0.5.4``; TensorFlow 2.21 accepts ``>=0.5.1,<1``, so
it installs into the project's ``.venv`` (the dev extra) without a venv of its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, started_worker
from tests.helpers.gateway import GatewayProcess, started_gateway
from tests.helpers.litert_reference import litert_outputs
from tests.helpers.served import ROOT

pytestmark = pytest.mark.integration

KEY = "triton-probe-key-0123"
PROBE = ROOT / "tests" / "helpers" / "triton_probe.py"
#: Inputs per request: more than one, so the batch axis is split and stacked back.
BATCH = 3
EXPECTED_FORM = "expected datatype FP32, shape [-1, 28, 28, 1]"


@pytest.fixture(scope="module")
def tc_settings(settings: Settings) -> Settings:
    return on_db(settings, 15).with_(api_keys=KEY)


@pytest.fixture(scope="module")
def gateway(tc_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if importlib.util.find_spec("tritonclient") is None:
        reason = "tritonclient[http] is not installed (the dev extra: scripts/bootstrap.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI must not go green without the protocol check
        pytest.skip(reason)
    logs = tmp_path_factory.mktemp("triton")
    worker: WorkerProcess = started_worker(tc_settings, ["digits:fp32"], logs / "worker.log")
    gw = started_gateway(tc_settings, logs / "gateway.log")
    yield gw
    gw.stop()
    worker.stop()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    # Fresh content: computed by the worker, never a cache hit from another module.
    return np.random.default_rng(273).random((BATCH, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def probe(gateway: GatewayProcess, x: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What tritonclient saw, every call made once (the child pays gevent's import once)."""
    path = tmp_path_factory.mktemp("triton") / "x.npy"
    np.save(path, x)
    proc = subprocess.run(
        [
            sys.executable,
            str(PROBE),
            "--url",
            f"127.0.0.1:{gateway.port}",
            "--key",
            KEY,
            "--input",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + gateway.log_text()[-2000:]
    seen: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return seen


@pytest.fixture(scope="module")
def reference(models_dir: Path, x: np.ndarray) -> np.ndarray:
    return litert_outputs(models_dir / "digits" / "fp32" / "model.tflite", {"image": x})["probs"]


def as_f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def test_health_and_model_readiness_read_as_the_protocol_says(probe: dict[str, Any]):
    assert probe["live"] is True and probe["ready"] is True
    assert probe["model_ready"] is True
    assert probe["unserved_ready"] is False  # fp16 is in the models folder, no worker serves it
    assert probe["server"]["name"] == "inferq"
    assert "binary_tensor_data" in probe["server"]["extensions"]


def test_model_metadata_names_inputs_and_outputs_with_datatype_and_batch_shape(probe: dict[str, Any]):
    meta = probe["metadata"]
    assert meta["name"] == "digits" and "fp32" in meta["versions"]
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    assert probe["default_metadata"]["inputs"] == meta["inputs"]


@pytest.mark.parametrize(
    "combo",
    ["00", "01", "10", "11"],
    ids=["json-in-json-out", "json-in-binary-out", "binary-in-json-out", "binary-in-binary-out"],
)
def test_outputs_equal_litert_with_binary_data_on_and_off(
    probe: dict[str, Any], reference: np.ndarray, combo: str
):
    got = probe["infer"][combo]
    probs = as_f32(got["probs"])
    assert got["dtype"] == "float32" and probs.shape == (BATCH, 10)
    np.testing.assert_allclose(probs, reference, rtol=1e-6, atol=1e-7)
    head = got["response"]
    binary_out = combo[1] == "1"
    assert head["model_name"] == "digits" and head["model_version"] == "fp32"
    assert head["id"] == f"in{combo[0]}-out{combo[1]}"
    [out] = head["outputs"]
    assert out["name"] == "probs" and out["datatype"] == "FP32" and out["shape"] == [BATCH, 10]
    if binary_out:
        assert out["parameters"]["binary_data_size"] == BATCH * 10 * 4
    else:
        assert "binary_data_size" not in (out.get("parameters") or {})


def test_every_output_in_binary_when_none_is_named(probe: dict[str, Any], reference: np.ndarray):
    np.testing.assert_allclose(as_f32(probe["all_outputs"]), reference, rtol=1e-6, atol=1e-7)


def test_concurrent_and_asyncio_requests_get_the_same_outputs(probe: dict[str, Any], reference: np.ndarray):
    # async_infer: one request per input, in flight together on gevent's pool;
    # tritonclient.http.aio: the same protocol over aiohttp.
    np.testing.assert_allclose(as_f32(probe["async_infer"]), reference, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(as_f32(probe["aio_infer"]), reference, rtol=1e-6, atol=1e-7)


def test_tritons_integer_priority_is_read_and_a_gzip_answer_may_be_asked_for(
    probe: dict[str, Any], reference: np.ndarray
):
    np.testing.assert_allclose(as_f32(probe["priority"]), reference, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(as_f32(probe["gzip_response"]), reference, rtol=1e-6, atol=1e-7)


def test_a_wrong_shape_raises_inference_server_exception_with_the_gateways_message(
    probe: dict[str, Any], gateway: GatewayProcess
):
    err = probe["errors"]["wrong_shape"]
    assert err["status"] == "400"
    assert EXPECTED_FORM in err["message"] and "[1, 28, 28, 3]" in err["message"]
    # The very message the gateway answers (the same request as JSON, by httpx).
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28, 3], "data": [0.0] * 2352}]}
    r = httpx.post(
        f"{gateway.url}/v2/models/digits/versions/fp32/infer",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 400 and r.json() == {"error": err["message"]}


def test_other_errors_reach_tritonclient_with_status_and_message(probe: dict[str, Any]):
    errors = probe["errors"]
    assert errors["wrong_datatype"]["status"] == "400"
    assert (
        EXPECTED_FORM in errors["wrong_datatype"]["message"] and "FP64" in errors["wrong_datatype"]["message"]
    )
    assert errors["unknown_model"]["status"] == "404" and "nope" in errors["unknown_model"]["message"]
    assert (
        errors["gzip_request"]["status"] == "400" and "Content-Encoding" in errors["gzip_request"]["message"]
    )
    assert (
        errors["priority_out_of_range"]["status"] == "400"
        and "priority" in errors["priority_out_of_range"]["message"]
    )
    assert errors["no_key"]["status"] == "401" and "key" in errors["no_key"]["message"]
