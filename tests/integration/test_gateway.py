"""The HTTP gateway end to end: a real uvicorn process, a real worker, a private Redis.

Each test states one promise of the gateway (docs/gateway.md) and can fail: outputs
are compared with the direct ``producers.Client`` computing the same input again
(``no_cache``), errors by status and by what the message names.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.response_reader import decode_response
from producers.client import Client
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, started_worker
from tests.helpers.gateway import GatewayProcess, started_gateway

pytestmark = pytest.mark.integration

KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
MAX_BODY = 1024 * 1024
INFER_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def gw_settings(settings: Settings) -> Settings:
    # A database of the module's own: its queues and stats are only this module's jobs.
    return on_db(settings, 11).with_(
        api_keys=f"{KEY_A},{KEY_B}",
        gateway_max_body_bytes=MAX_BODY,
        gateway_infer_timeout_s=INFER_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def worker(gw_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """digits fp32 and int8; fp16 is in the models folder but left unserved on purpose."""
    w = started_worker(
        gw_settings, ["digits:fp32", "digits:int8"], tmp_path_factory.mktemp("gw") / "worker.log"
    )
    yield w
    w.stop()


@pytest.fixture(scope="module")
def gateway(
    gw_settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = started_gateway(gw_settings, tmp_path_factory.mktemp("gw") / "gateway.log")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=A, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def direct(gw_settings: Settings) -> Iterator[Client]:
    with Client(gw_settings) as c:
        yield c


_rng = np.random.default_rng(15)


def images(n: int) -> np.ndarray:
    """n inputs no other test sends (fresh content: computed, never a cache hit)."""
    return _rng.random((n, 28, 28, 1), dtype=np.float32)


def json_body(x: np.ndarray, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [
            {"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}
        ]
    }
    body.update(extra)
    return body


def binary_body(x: np.ndarray, binary_output: bool = True) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": binary_output},
        }
    )
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def direct_probs(client: Client, x: np.ndarray, variant: str = "fp32") -> np.ndarray:
    """The direct client's outputs for the same inputs, computed again (no cache)."""
    jobs = client.submit_many("digits", list(x), variant=variant, no_cache=True)
    return np.stack([r.outputs["probs"] for r in client.wait_all(jobs, timeout=30)])  # type: ignore[union-attr]


def error_of(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    return str(body["error"])


def poll(http: httpx.Client, location: str, headers: dict[str, str] = A, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http.get(location, headers=headers)
        assert r.status_code == 200, r.text
        state = r.json()
        if state["status"] not in ("queued", "running"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"{location} still {state['status']} after {timeout} s")


# --- health, metadata, keys -------------------------------------------------------------


def test_health_live_and_ready_answer_without_a_key(gateway: GatewayProcess):
    assert httpx.get(f"{gateway.url}/v2/health/live").json() == {"live": True}
    r = httpx.get(f"{gateway.url}/v2/health/ready")
    assert r.status_code == 200, r.text
    assert r.json()["ready"] is True and r.json()["workers"] >= 1


def test_missing_or_wrong_key_is_401_with_www_authenticate(gateway: GatewayProcess):
    url = f"{gateway.url}/v2/models/digits"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY_A}"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "key" in error_of(r)
    r = httpx.post(f"{url}/infer", json=json_body(images(1)), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert httpx.get(url, headers=B).status_code == 200


def test_server_metadata_names_the_binary_extension(http: httpx.Client):
    meta = http.get("/v2").json()
    assert meta["name"] == "inferq"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_shows_the_batch_dimension_and_the_variants_as_versions(http: httpx.Client):
    meta = http.get("/v2/models/digits").json()
    assert meta["name"] == "digits"
    assert {"fp32", "int8"} <= set(meta["versions"])
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    assert http.get("/v2/models/digits/versions/int8").json()["inputs"][0]["datatype"] == "FP32"


def test_model_ready_only_for_a_served_version(http: httpx.Client):
    assert http.get("/v2/models/digits/versions/fp32/ready").json()["ready"] is True
    r = http.get("/v2/models/digits/versions/fp16/ready")  # in the models folder, no worker
    assert r.status_code == 503 and "fp16" in error_of(r)


def test_unknown_model_or_version_is_404(http: httpx.Client):
    for path in (
        "/v2/models/nope",
        "/v2/models/digits/versions/nope",
        "/v2/models/digits/versions/..%2F..%2Fx",
    ):
        r = http.get(path)
        assert r.status_code == 404, (path, r.text)
        error_of(r)
    r = http.post("/v2/models/nope/infer", json=json_body(images(1)))
    assert r.status_code == 404 and "nope" in error_of(r)
    r = http.post("/v2/models/digits/versions/nope/jobs", json=json_body(images(1)))
    assert r.status_code == 404


def test_unknown_model_errors_name_no_path_of_the_gateways_host(http: httpx.Client, gw_settings: Settings):
    """The client's own ModelNotFound names the models folder it looked in (for the
    operator); an HTTP caller learns the model is unknown, not where the server keeps files."""
    folder = str(gw_settings.models_dir.resolve())
    for method, path in (
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/versions/fp32/ready"),
        ("GET", "/v2/models/nope/stats"),
        ("POST", "/v2/models/nope/infer"),
        ("POST", "/v2/models/nope/versions/fp32/jobs"),
    ):
        r = http.request(method, path, json=json_body(images(1)) if method == "POST" else None)
        assert r.status_code == 404, (path, r.text)
        message = error_of(r)
        assert "nope" in message, message
        assert folder not in message and "/" not in message, (path, message)


# --- synchronous inference ---------------------------------------------------------------


def test_json_infer_equals_the_direct_client_result(http: httpx.Client, direct: Client):
    x = images(3)
    r = http.post("/v2/models/digits/versions/fp32/infer", json=json_body(x, id="req-1"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("digits", "fp32", "req-1")
    (out,) = doc["outputs"]
    assert out["name"] == "probs" and out["datatype"] == "FP32" and out["shape"] == [3, 10]
    got = np.asarray(out["data"], dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(got, direct_probs(direct, x), rtol=1e-5, atol=1e-6)


def test_binary_infer_equals_the_direct_client_result(http: httpx.Client, direct: Client):
    x = images(2)
    body, headers = binary_body(x)
    r = http.post("/v2/models/digits/versions/fp32/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    doc, arrays = decode_response(r.content, int(r.headers["inference-header-content-length"]))
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 2 * 10 * 4
    assert "data" not in doc["outputs"][0]
    np.testing.assert_allclose(arrays["probs"], direct_probs(direct, x), rtol=1e-5, atol=1e-6)
    # The same input as JSON: the same numbers, bit for bit (read from the cache).
    r = http.post("/v2/models/digits/versions/fp32/infer", json=json_body(x))
    assert r.json()["parameters"]["cached"] == 2
    np.testing.assert_array_equal(
        np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 10), arrays["probs"]
    )


def test_binary_input_with_json_output_and_one_binary_output_by_name(http: httpx.Client):
    x = images(1)
    body, headers = binary_body(x, binary_output=False)
    r = http.post("/v2/models/digits/infer", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    json_probs = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32)
    req = json_body(x, outputs=[{"name": "probs", "parameters": {"binary_data": True}}])
    r = http.post("/v2/models/digits/infer", json=req)
    _, arrays = decode_response(r.content, int(r.headers["inference-header-content-length"]))
    np.testing.assert_array_equal(arrays["probs"].reshape(-1), json_probs)


def test_int8_version_answers_close_to_fp32(http: httpx.Client):
    x = images(4)
    fp32 = http.post("/v2/models/digits/versions/fp32/infer", json=json_body(x)).json()
    int8 = http.post("/v2/models/digits/versions/int8/infer", json=json_body(x)).json()
    a = np.asarray(fp32["outputs"][0]["data"]).reshape(4, 10)
    b = np.asarray(int8["outputs"][0]["data"]).reshape(4, 10)
    assert int8["model_version"] == "int8"
    assert np.abs(a - b).max() < 0.1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"datatype": "FP64"}, ["'image'", "FP32", "[-1, 28, 28, 1]", "FP64"]),
        ({"shape": [28, 28, 1]}, ["'image'", "[-1, 28, 28, 1]", "[28, 28, 1]"]),
        ({"name": "img"}, ["'image'", "FP32", "[-1, 28, 28, 1]", "'img'"]),
        ({"shape": [1, 28, 28, 2]}, ["needs 1568 values, got 784"]),
        ({"datatype": "BYTES"}, ["FP32", "BYTES"]),
        ({"data": ["a"] * 784}, ["needs numbers"]),
        ({"data": None}, ["expected data"]),
        ({"shape": "1,28,28,1"}, ["inputs.0.shape"]),
    ],
)
def test_wrong_dtype_shape_or_name_is_400_naming_the_expected_form(http: httpx.Client, change, named):
    body = json_body(images(1))
    body["inputs"][0].update(change)  # type: ignore[index]
    r = http.post("/v2/models/digits/versions/fp32/infer", json=body)
    assert r.status_code == 400, r.text
    message = error_of(r)
    for part in named:
        assert part in message, (part, message)


def test_malformed_bodies_are_400_never_422(http: httpx.Client):
    for content in (b"", b"{", b"[]", b'{"inputs": []}', b'{"inputs": [{"name": "image"}]}'):
        r = http.post(
            "/v2/models/digits/infer", content=content, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, (content, r.text)
        error_of(r)
    body, headers = binary_body(images(1))
    r = http.post("/v2/models/digits/infer", content=body[:-4], headers=headers)  # 4 bytes short
    assert r.status_code == 400 and "binary_data_size" in error_of(r)


def test_header_numbers_python_cannot_read_are_400_or_ignored_never_500(gateway: GatewayProcess):
    """A header byte 0xB2 (latin-1's superscript two) is a digit to str.isdigit() but not
    to int(); 5000 digits pass isdigit() but not int()'s limit."""
    auth = f"Authorization: Bearer {KEY_A}\r\n".encode()
    body = orjson.dumps(json_body(images(1)))
    for value in (b"\xb2", b"9" * 5000):
        head = (
            b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + auth
            + b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: "
            + value
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        answer, _ = raw_request(gateway.port, head, body)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
        assert b"Inference-Header-Content-Length" in answer
    # Prefer is a hint: a malformed one is ignored (RFC 7240), the job answered as usual
    head = (
        b"POST /v2/models/digits/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + auth
        + b"Content-Type: application/json\r\nPrefer: wait=\xb2\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    answer, _ = raw_request(gateway.port, head, body)
    assert answer.startswith((b"HTTP/1.1 202", b"HTTP/1.1 200")), answer[:300]
    assert b"preference-applied" not in answer.lower()


def test_infer_past_the_timeout_is_504(http: httpx.Client):
    t0 = time.monotonic()
    r = http.post("/v2/models/digits/versions/fp16/infer", json=json_body(images(1)))  # no worker
    assert r.status_code == 504, r.text
    assert "timeout" in error_of(r) and "digits:fp16" in error_of(r)  # names what nobody serves
    assert time.monotonic() - t0 < INFER_TIMEOUT_S + 2


# --- the body limit ----------------------------------------------------------------------


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 5) -> tuple[bytes, float]:
    """Send ``head`` + ``body`` on a raw socket; the whole answer and how long it took."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        with contextlib.suppress(OSError):  # the gateway may close before taking it all: the point
            s.sendall(body)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - t0


def test_a_huge_content_length_is_413_before_the_body_is_read(gateway: GatewayProcess):
    head = (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {KEY_A}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
    )
    answer, took = raw_request(gateway.port, head, b'{"inputs": [')
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b'"error"' in answer
    assert took < 2.0  # answered at once, and the socket closed: nothing waited for the body


def test_a_chunked_body_past_the_limit_is_cut_off_with_413(gateway: GatewayProcess):
    head = (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {KEY_A}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    body = (
        b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2 * MAX_BODY // len(chunk)))
        + b"0\r\n\r\n"
    )
    answer, took = raw_request(gateway.port, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert took < 5.0


# --- asynchronous jobs -------------------------------------------------------------------


def test_a_job_answers_202_with_location_then_polls_to_success(http: httpx.Client, direct: Client):
    x = images(1)
    r = http.post("/v2/models/digits/versions/fp32/jobs", json=json_body(x))
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    assert location.startswith("/v2/jobs/h-") and r.headers["retry-after"]
    assert r.json()["status"] == "queued" and r.json()["location"] == location
    state = poll(http, location)
    assert state["status"] == "success", state
    assert state["model_name"] == "digits" and state["model_version"] == "fp32"
    assert state["timing"]["compute_ms"] >= 0
    (out,) = state["outputs"]
    assert out["shape"] == [1, 10]
    np.testing.assert_allclose(
        np.asarray(out["data"]).reshape(1, 10), direct_probs(direct, x), rtol=1e-5, atol=1e-6
    )


def test_a_cached_input_answers_200_with_the_result(http: httpx.Client):
    x = images(1)
    assert http.post("/v2/models/digits/infer", json=json_body(x)).status_code == 200
    r = http.post("/v2/models/digits/jobs", json=json_body(x))
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["status"] == "success" and state["cached"] is True
    assert "location" not in r.headers
    assert http.get(state["location"]).json()["status"] == "success"


def test_prefer_wait_answers_the_result_in_one_request(http: httpx.Client):
    r = http.post(
        "/v2/models/digits/jobs", json=json_body(images(1)), headers={"Prefer": "respond-async, wait=2"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["preference-applied"] == "wait=2"
    assert r.json()["status"] == "success" and r.json()["outputs"][0]["shape"] == [1, 10]
    # A job that cannot finish: answered 202 after about the wait, not before.
    t0 = time.monotonic()
    r = http.post(
        "/v2/models/digits/versions/fp16/jobs", json=json_body(images(1)), headers={"Prefer": "wait=1"}
    )
    assert r.status_code == 202 and 0.9 <= time.monotonic() - t0 < 3
    assert r.headers["preference-applied"] == "wait=1"
    http.delete(r.headers["location"])
    # A longer wait than the gateway allows is capped at its infer timeout, and says so.
    r = http.post(
        "/v2/models/digits/versions/fp16/jobs", json=json_body(images(1)), headers={"Prefer": "wait=600"}
    )
    assert r.status_code == 202 and r.headers["preference-applied"] == f"wait={INFER_TIMEOUT_S:g}"
    http.delete(r.headers["location"])


def test_get_with_prefer_wait_is_a_long_poll_answered_when_the_job_ends(http: httpx.Client):
    """POST then one GET: the GET waits for the result instead of the client polling."""
    r = http.post("/v2/models/digits/jobs", json=json_body(images(1)))
    location = r.json()["location"]
    t0 = time.monotonic()
    r = http.get(location, headers={**A, "Prefer": "wait=2"})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    assert time.monotonic() - t0 < 1.5  # answered when the job ended, not at the end of the wait
    assert r.headers["preference-applied"] == "wait=2"
    # A job nobody serves: the GET answers "queued" once the wait is over, not before.
    r = http.post("/v2/models/digits/versions/fp16/jobs", json=json_body(images(1)))
    location = r.headers["location"]
    t0 = time.monotonic()
    r = http.get(location, headers={**A, "Prefer": "wait=1"})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert 0.9 <= time.monotonic() - t0 < 3
    assert r.headers["retry-after"]
    http.delete(location)


def test_delete_cancels_a_queued_job(http: httpx.Client):
    r = http.post(
        "/v2/models/digits/versions/fp16/jobs", json=json_body(images(1))
    )  # no worker: stays queued
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    assert http.get(location).json()["status"] == "queued"
    r = http.delete(location)
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled"
    state = http.get(location).json()
    assert state["status"] == "cancelled" and state["error"]
    assert http.delete(location).json()["outcome"] == "already_cancelled"


def test_another_keys_job_is_404(http: httpx.Client, gateway: GatewayProcess, direct: Client):
    r = http.post("/v2/models/digits/versions/fp16/jobs", json=json_body(images(1)))
    location = r.headers["location"]
    for method in ("GET", "DELETE"):
        r = http.request(method, location, headers=B)
        assert r.status_code == 404, r.text
        error_of(r)
    assert http.get(location).json()["status"] == "queued"  # untouched, still key A's
    assert http.delete(location).json()["outcome"] == "cancelled"
    # A content-hash job id (or anything not a handle) is never looked up.
    job = direct.submit("digits", images(1)[0], variant="fp32")
    for ref in (job.id, "h-zz", "h-" + "0" * 32):
        assert http.get(f"/v2/jobs/{ref}").status_code == 404


def test_another_key_cannot_cancel_a_job_it_shares_by_sending_the_same_input(http: httpx.Client):
    """Two keys sending one input share one job (its id is the input's hash): a DELETE
    through either key's handle leaves it alone ("shared") instead of cancelling the
    other key's job."""
    x = images(1)
    a = http.post("/v2/models/digits/versions/fp16/jobs", json=json_body(x))  # no worker: stays queued
    b = http.post("/v2/models/digits/versions/fp16/jobs", json=json_body(x), headers=B)
    assert a.status_code == b.status_code == 202
    r = http.delete(b.headers["location"], headers=B)
    assert r.status_code == 200 and r.json()["outcome"] == "shared", r.text
    assert http.get(a.headers["location"]).json()["status"] == "queued"  # key A's job runs on
    assert http.delete(a.headers["location"]).json()["outcome"] == "shared"
    # A job only one key holds is cancelled as before.
    own = http.post("/v2/models/digits/versions/fp16/jobs", json=json_body(images(1)))
    assert http.delete(own.headers["location"]).json()["outcome"] == "cancelled"


def test_another_keys_cache_hit_does_not_show_in_my_job(http: httpx.Client):
    """Key B's cache hit on key A's input is B's alone: A's job still reads as computed
    for A (its own timing), B's as cached, whichever process remembers which hit."""
    x = images(1)
    a = http.post("/v2/models/digits/jobs", json=json_body(x), headers={**A, "Prefer": "wait=2"})
    assert a.status_code == 200 and a.json()["cached"] is False, a.text
    b = http.post("/v2/models/digits/jobs", json=json_body(x), headers=B)
    assert b.status_code == 200 and b.json()["cached"] is True, b.text
    mine = http.get(a.json()["location"]).json()
    assert mine["cached"] is False, mine
    assert mine["timing"]["compute_ms"] > 0 and "computed" not in (mine["timing"] or {})
    theirs = http.get(b.json()["location"], headers=B).json()
    assert theirs["cached"] is True, theirs


def test_bulk_submit_answers_one_handle_per_input(http: httpx.Client):
    x = images(3)
    r = http.post("/v2/models/digits/jobs", json=json_body(x, parameters={"bulk": "per_input"}))
    assert r.status_code in (200, 202), r.text
    jobs = r.json()["jobs"]
    assert len(jobs) == 3 and len({j["id"] for j in jobs}) == 3
    states = [poll(http, j["location"]) for j in jobs]
    assert all(s["status"] == "success" for s in states)
    together = http.post("/v2/models/digits/infer", json=json_body(x)).json()
    stacked = np.concatenate([np.asarray(s["outputs"][0]["data"], dtype=np.float32) for s in states])
    np.testing.assert_array_equal(stacked, np.asarray(together["outputs"][0]["data"], dtype=np.float32))
    r = http.post("/v2/models/digits/jobs", json=json_body(x, parameters={"bulk": "one"}))
    assert r.status_code == 400 and "per_input" in error_of(r)


# --- metrics, stats, docs ----------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_count_requests_per_route_template_and_status(http: httpx.Client, gateway: GatewayProcess):
    route = "/v2/models/{model}/versions/{version}/infer"
    before = httpx.get(f"{gateway.url}/metrics").text
    http.post("/v2/models/digits/versions/fp32/infer", json=json_body(images(1)))
    http.post("/v2/models/digits/versions/fp32/infer", json={"inputs": []})
    after = httpx.get(f"{gateway.url}/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    for status in ("200", "400"):
        labels = {"method": "POST", "route": route, "status": status}
        assert (
            metric(after.text, "inferq_gateway_requests_total", **labels)
            == metric(before, "inferq_gateway_requests_total", **labels) + 1
        )
    assert (
        metric(
            after.text,
            "inferq_gateway_request_duration_seconds_count",
            method="POST",
            route=route,
            status="200",
        )
        >= 1
    )
    assert "/v2/models/digits" not in after.text  # templates, never raw paths


def test_stats_report_queue_depth_workers_and_latency(http: httpx.Client):
    http.post("/v2/models/digits/versions/fp32/infer", json=json_body(images(2)))
    r = http.get("/v2/models/digits/versions/fp32/stats")
    assert r.status_code == 200, r.text
    (s,) = r.json()["model_stats"]
    assert (s["name"], s["version"]) == ("digits", "fp32")
    assert s["queue_depth"] == 0 and s["workers"] == 1
    assert set(s["compute_ms"]) <= {"p50", "p95", "p99"}
    every = http.get("/v2/models/digits/stats").json()["model_stats"]
    assert {"fp32", "int8"} <= {e["version"] for e in every}


def test_docs_and_openapi_describe_the_real_shapes(gateway: GatewayProcess):
    assert "swagger" in httpx.get(f"{gateway.url}/docs").text.lower()
    schema = httpx.get(f"{gateway.url}/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"InferRequest", "InferResponse", "ModelMetadata", "JobState", "ErrorBody"} <= set(components)
    assert "HTTPValidationError" not in components
    infer = schema["paths"]["/v2/models/{model}/infer"]["post"]
    assert "Inference-Header-Content-Length" in infer["description"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferRequest")


def test_unknown_routes_and_methods_answer_the_error_shape(gateway: GatewayProcess):
    r = httpx.get(f"{gateway.url}/v3/nothing")
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = httpx.put(f"{gateway.url}/v2/health/live")
    assert r.status_code == 405 and set(r.json()) == {"error"}
