"""The gateway through an independent client: NVIDIA's ``tritonclient.http``.

Triton's own Python client speaks the Open Inference Protocol with the binary tensor
data extension; if it reads inferq's answers unchanged, so will the other clients of
the protocol. It runs in a child process (it brings gevent, which is kept out of the
test process), with binary data on and off, and its outputs must equal the direct
client's for the same inputs, computed again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, started_worker
from tests.helpers.gateway import GatewayProcess, started_gateway

pytestmark = pytest.mark.integration

KEY = "triton-key-123"

#: Run by the child: infer with tritonclient, binary on or off, print the outputs as JSON.
SCRIPT = """
import json, sys
import numpy as np
import tritonclient.http as httpclient

url, key, binary, path = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
x = np.load(path)
client = httpclient.InferenceServerClient(url=url)
headers = {"Authorization": f"Bearer {key}"}
out = {
    "live": client.is_server_live(headers=headers),
    "ready": client.is_server_ready(headers=headers),
    "model_ready": client.is_model_ready("digits", "int8", headers=headers),
    "metadata": client.get_model_metadata("digits", "int8", headers=headers),
    "server": client.get_server_metadata(headers=headers),
}
inp = httpclient.InferInput("image", list(x.shape), "FP32")
inp.set_data_from_numpy(x, binary_data=binary)
outputs = [httpclient.InferRequestedOutput("probs", binary_data=binary)]
res = client.infer("digits", [inp], model_version="int8", outputs=outputs, request_id="t1", headers=headers)
out["probs"] = res.as_numpy("probs").tolist()
out["dtype"] = str(res.as_numpy("probs").dtype)
out["response"] = {k: v for k, v in res.get_response().items() if k != "outputs"}
try:
    client.infer("nope", [inp], headers=headers)
except Exception as exc:
    out["unknown_model"] = str(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tc_settings(settings: Settings) -> Settings:
    return on_db(settings, 12).with_(api_keys=KEY)


@pytest.fixture(scope="module")
def gateway(tc_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a dev dependency")
    logs = tmp_path_factory.mktemp("tc")
    worker: WorkerProcess = started_worker(tc_settings, ["digits:fp32", "digits:int8"], logs / "worker.log")
    gw = started_gateway(tc_settings, logs / "gateway.log")
    yield gw
    gw.stop()
    worker.stop()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_reads_the_gateway_and_matches_the_direct_client(
    gateway: GatewayProcess, tc_settings: Settings, tmp_path: Path, binary: bool
):
    x = np.random.default_rng(73 + binary).random((3, 28, 28, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            f"127.0.0.1:{gateway.port}",
            KEY,
            "1" if binary else "0",
            str(tmp_path / "x.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["live"] and out["ready"] and out["model_ready"]
    assert "binary_tensor_data" in out["server"]["extensions"]
    assert out["metadata"]["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert out["response"]["model_name"] == "digits" and out["response"]["id"] == "t1"
    assert out["dtype"] == "float32"
    with Client(tc_settings) as direct:
        jobs = direct.submit_many("digits", list(x), variant="int8", no_cache=True)
        want = np.stack([r.outputs["probs"] for r in direct.wait_all(jobs, timeout=30)])  # type: ignore[union-attr]
    np.testing.assert_allclose(np.asarray(out["probs"], dtype=np.float32), want, rtol=1e-5, atol=1e-6)
    assert "nope" in out["unknown_model"]
