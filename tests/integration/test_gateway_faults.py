"""The gateway when Redis goes away, hangs, or the gateway itself is stopped.

A Redis of the module's own (the tests stop, restart and freeze it), a worker and a
gateway process on it. Bounds asserted: 503 within 2 s when Redis is down; 503 within
the client's bound when it hangs, while the event loop still answers liveness at once;
recovery with no restart of the gateway.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from ops.local.redis_server import LocalRedis, free_port
from tasks.settings import Settings
from tests.conftest import WorkerProcess, started_worker
from tests.helpers.gateway import GatewayProcess, started_gateway

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT_S = 1.5
_rng = np.random.default_rng(1515)


def infer_body() -> dict[str, object]:
    x = _rng.random((1, 28, 28, 1), dtype=np.float32)
    return {
        "inputs": [
            {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}
        ]
    }


@pytest.fixture(scope="module")
def redis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(port: int, redis_dir: Path) -> Iterator[LocalRedis]:
    """A Redis that keeps its data across a restart on the same port (append-only file)."""
    s = LocalRedis(port=port, appendonly=True, workdir=redis_dir).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fault_settings(server: LocalRedis, models_dir: Path) -> Settings:
    return Settings(broker_url=server.url, models_dir=models_dir, client_timeout_s=CLIENT_TIMEOUT_S)


@pytest.fixture(scope="module")
def worker(fault_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(fault_settings, ["digits:fp32"], tmp_path_factory.mktemp("logs") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def gateway(
    fault_settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = started_gateway(fault_settings, tmp_path_factory.mktemp("logs") / "gateway.log")
    yield gw
    gw.stop()


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"gateway not ready within {timeout} s")


def test_redis_down_is_503_within_2_s_and_the_gateway_recovers_by_itself(
    gateway: GatewayProcess, server: LocalRedis, port: int, redis_dir: Path
):
    wait_ready(gateway.url, 30)
    assert (
        httpx.post(f"{gateway.url}/v2/models/digits/infer", json=infer_body(), timeout=30).status_code == 200
    )
    server.stop()
    try:
        for method, path, body in (
            ("GET", "/v2/health/ready", None),
            ("POST", "/v2/models/digits/infer", infer_body()),
        ):
            t0 = time.monotonic()
            r = httpx.request(method, f"{gateway.url}{path}", json=body, timeout=10)
            took = time.monotonic() - t0
            assert r.status_code == 503, (path, r.text)
            assert took < 2.0, (path, took)
            assert r.headers["retry-after"] and set(r.json()) == {"error"}
        assert httpx.get(f"{gateway.url}/v2/health/live", timeout=2).status_code == 200
    finally:
        restarted = LocalRedis(port=port, appendonly=True, workdir=redis_dir).start()
        server.proc = restarted.proc  # the module's fixture stops it at the end
    wait_ready(gateway.url, 60)
    r = httpx.post(f"{gateway.url}/v2/models/digits/infer", json=infer_body(), timeout=30)
    assert r.status_code == 200, r.text


def test_redis_hung_is_503_within_the_bound_while_liveness_answers_at_once(
    gateway: GatewayProcess, server: LocalRedis
):
    wait_ready(gateway.url, 60)
    assert server.proc is not None
    answer: dict[str, object] = {}

    def infer() -> None:
        t0 = time.monotonic()
        r = httpx.post(f"{gateway.url}/v2/models/digits/infer", json=infer_body(), timeout=30)
        answer.update(status=r.status_code, took=time.monotonic() - t0, body=r.json())

    # The model's metadata read first, so the infer below reaches the sending, not only
    # the catalogue read (each message is bounded by the client's bound, not the infer's).
    assert httpx.get(f"{gateway.url}/v2/models/digits", timeout=10).status_code == 200
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=infer)
        t.start()
        time.sleep(0.3)  # the infer is now waiting on the frozen Redis
        lags = []
        for _ in range(5):
            t0 = time.monotonic()
            assert httpx.get(f"{gateway.url}/v2/health/live", timeout=2).status_code == 200
            lags.append(time.monotonic() - t0)
            time.sleep(0.1)
        t0 = time.monotonic()
        ready = httpx.get(f"{gateway.url}/v2/health/ready", timeout=10)
        ready_took = time.monotonic() - t0
        t.join(timeout=15)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert max(lags) < 0.5, lags
    assert ready.status_code == 503 and ready_took < 2.0, (ready.text, ready_took)
    assert answer.get("status") == 503, answer
    assert float(answer["took"]) < CLIENT_TIMEOUT_S + 1.5, answer  # type: ignore[arg-type]
    wait_ready(gateway.url, 30)


def test_sigint_stops_the_gateway_cleanly(fault_settings: Settings, tmp_path: Path):
    gw = started_gateway(fault_settings, tmp_path / "gateway.log")
    assert httpx.get(f"{gw.url}/v2/health/live").status_code == 200
    gw.proc.send_signal(signal.SIGINT)
    code = gw.proc.wait(timeout=15)
    gw.stop()
    assert code in (0, 130), gw.log_text()[-2000:]
    assert "Traceback" not in gw.log_text(), gw.log_text()[-3000:]
    assert "Application shutdown complete" in gw.log_text()


def test_several_worker_processes_share_the_port_and_sum_their_metrics(
    fault_settings: Settings, tmp_path: Path
):
    gw = started_gateway(fault_settings, tmp_path / "gateway.log", "--workers", "2")
    try:
        for _ in range(30):  # new connections: the kernel spreads them over both processes
            assert httpx.get(f"{gw.url}/v2/health/live").status_code == 200
        text = httpx.get(f"{gw.url}/metrics").text
        assert gw.log_text().count("Application startup complete") == 2
    finally:
        gw.proc.send_signal(signal.SIGINT)
        code = gw.proc.wait(timeout=20)
        gw.stop()
    assert code in (0, 130)
    lives = [
        line
        for line in text.splitlines()
        if line.startswith("inferq_gateway_requests_total") and "/v2/health/live" in line
    ]
    assert lives and float(lives[0].rsplit(" ", 1)[1]) >= 31, (
        lives
    )  # 30 + the start-up probe, from every process


def test_jobs_submitted_over_http_complete_when_their_worker_is_killed_mid_job(
    models_dir: Path, tmp_path: Path
) -> None:
    """The worker guarantees hold through HTTP: a worker SIGKILLed while it holds jobs
    that came through the gateway; a second worker takes them back after the visibility
    timeout, and every handle answers its result."""
    import redis as redis_py

    with LocalRedis(appendonly=True, workdir=tmp_path / "redis") as srv:
        s = Settings(broker_url=srv.url, models_dir=models_dir, visibility_timeout_s=3, metrics_port=0)
        first = started_worker(s, ["digits:fp32"], tmp_path / "w1.log")
        gw = started_gateway(s, tmp_path / "gw.log")
        broker = redis_py.Redis.from_url(srv.url)
        second: WorkerProcess | None = None
        try:
            wait_ready(gw.url, 30)
            os.kill(first.proc.pid, signal.SIGSTOP)  # the jobs wait in the queue for it
            x = _rng.random((24, 28, 28, 1), dtype=np.float32)
            body = {
                "inputs": [
                    {
                        "name": "image",
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "data": x.reshape(-1).tolist(),
                    }
                ]
            }
            r = httpx.post(f"{gw.url}/v2/models/digits/jobs", json=body, timeout=30)
            assert r.status_code == 202, r.text
            locations = [j["location"] for j in r.json()["jobs"]]
            assert len(locations) == 24
            os.kill(first.proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while broker.zcard("unacked_index") == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            first.proc.kill()  # holding messages it took and has not acknowledged
            first.proc.wait()
            second = started_worker(s, ["digits:fp32"], tmp_path / "w2.log")
            states = []
            for location in locations:
                got = httpx.get(f"{gw.url}{location}", headers={"Prefer": "wait=20"}, timeout=30)
                assert got.status_code == 200, got.text
                states.append(got.json())
            assert [st["status"] for st in states] == ["success"] * 24, states
            assert all(st["outputs"][0]["shape"] == [1, 10] for st in states)
        finally:
            if first.alive:
                os.kill(first.proc.pid, signal.SIGCONT)
            first.stop()
            if second is not None:
                second.stop()
            gw.stop()


def test_a_503_names_no_redis_address_or_user(models_dir: Path, tmp_path: Path) -> None:
    """The client's BrokerUnavailable names the Redis it tried (host, port, database, ACL
    user), for its operator; HTTP callers are told Redis is unavailable, not where it is
    (readiness, open to anyone, already says only which one is missing)."""
    port = free_port()  # nothing listens there
    s = Settings(
        broker_url=f"redis://inferq-acl-user@127.0.0.1:{port}/3", models_dir=models_dir, client_timeout_s=1.0
    )
    gw = started_gateway(s, tmp_path / "gateway.log")
    try:
        for method, path, body in (
            ("POST", "/v2/models/digits/infer", infer_body()),
            ("POST", "/v2/models/digits/jobs", infer_body()),
            ("GET", "/v2/models/digits", None),
            ("GET", "/v2/jobs/h-" + "0" * 32, None),
            ("DELETE", "/v2/jobs/h-" + "0" * 32, None),
        ):
            r = httpx.request(method, f"{gw.url}{path}", json=body, timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"], (path, r.text)
            message = r.json()["error"]
            assert "Redis" in message, message
            for secret in (str(port), "127.0.0.1", "inferq-acl-user", "redis://"):
                assert secret not in message, (path, message)
        assert str(port) in gw.log_text()  # the operator still finds the detail in the log
    finally:
        gw.stop()
