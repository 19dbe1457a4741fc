"""Reports that tell the truth: who serves what, what a cache hit cost, what metrics count.

One private redis-server and one ``inferq worker --concurrency 2`` serving only
``digits:fp32``, its metrics port taken by the test: ``int8``, ``fp16`` and
``savedmodel`` are variants no live worker serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import LocalRedis
from producers import AsyncClient, BadInput, Client, Expired, Timeout
from tasks.codec import encode_inputs
from tasks.constants import PREDICT_TASK
from tasks.keys import queue_name
from tasks.schema import Timing
from tasks.settings import Settings
from tests.conftest import WorkerProcess
from tests.helpers.cli import inferq
from tests.helpers.raw_messages import request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private(models_dir: Path) -> Iterator[Settings]:
    with LocalRedis() as server:
        yield Settings(broker_url=server.url, models_dir=models_dir, log_level="INFO")


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A metrics port something else listens on (and the next one, free, for the second process)."""
    import socket

    for _ in range(20):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        try:
            with socket.socket() as nxt:
                nxt.bind(("127.0.0.1", port + 1))
        except OSError:
            sock.close()
            continue
        sock.listen()
        yield port
        sock.close()
        return
    pytest.skip("no two consecutive free ports")


@pytest.fixture(scope="module")
def fp32_workers(
    private: Settings, taken_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("reports") / "worker.log"
    w = WorkerProcess(private, ["digits:fp32"], log, "--concurrency", "2", "--metrics-port", str(taken_port))
    with Client(private) as c:
        w.wait_ready(c, count=2)
    yield w
    w.stop()


def digits(models_dir: Path, n: int, start: int = 0) -> np.ndarray:
    return np.load(models_dir / "digits" / "data" / "heldout_x.npy")[start : start + n]


def fresh_input() -> np.ndarray:
    """An input no other test sent (so it is computed, not a cache hit)."""
    return np.random.default_rng(uuid.uuid4().int % 2**32).random((28, 28, 1), dtype=np.float32)


def metrics_ports(settings: Settings) -> list[int]:
    doc = json.loads(inferq(settings, "status", "--json").stdout)
    return sorted(int(w["metrics_port"]) for w in doc["workers"])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- 17: a metrics port in use ---------------------------------------------------------


def test_a_taken_metrics_port_falls_back_to_a_free_one_that_status_shows(
    fp32_workers: WorkerProcess, private: Settings, taken_port: int
) -> None:
    ports = metrics_ports(private)
    assert len(ports) == 2 and taken_port not in ports and taken_port + 1 in ports, ports
    for port in ports:
        assert "inferq_cache_hits" in scrape(port)
    assert f"metrics port {taken_port} on 127.0.0.1 is taken" in fp32_workers.log_text()
    text = inferq(private, "status").stdout
    assert all(f"metrics :{p}" in text for p in ports), text


# --- 14: metrics count expired jobs as expired, and each cache hit once ------------------


def test_each_cache_hit_is_counted_once_over_all_workers(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    ports = metrics_ports(private)
    before = sum(sample(scrape(p), "inferq_cache_hits_total", model="digits", variant="fp32") for p in ports)
    x = fresh_input()
    with Client(private) as client:
        client.submit("digits", x).wait(timeout=30)
        hits = [client.submit("digits", x) for _ in range(3)]
    assert all(j.cached for j in hits)
    for _ in range(2):  # and scraping again counts nothing twice
        after = sum(
            sample(scrape(p), "inferq_cache_hits_total", model="digits", variant="fp32") for p in ports
        )
        assert after - before == 3


def test_a_job_past_its_deadline_is_counted_expired_not_failed(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    ports = metrics_ports(private)

    def counts() -> tuple[float, float]:
        texts = [scrape(p) for p in ports]
        return (
            sum(sample(t, "inferq_jobs_total", variant="fp32", status="expired") for t in texts),
            sum(sample(t, "inferq_jobs_total", variant="fp32", status="failure") for t in texts),
        )

    expired0, failed0 = counts()
    with Client(private) as client:
        job = client.submit("digits", fresh_input(), deadline_ms=0.001)
        with pytest.raises(Expired):
            job.wait(timeout=30)
    time.sleep(0.2)  # metrics are recorded just after the record is stored
    assert counts() == (expired0 + 1, failed0)


# --- 14: a cache hit's own timing; result(id) agrees with wait() -------------------------


def test_a_cache_hit_has_its_own_timing_and_keeps_the_computing_jobs(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    x = fresh_input()
    with Client(private) as client:
        computed = client.submit("digits", x).wait(timeout=30)
        time.sleep(0.3)  # a hit long after: its end to end must not include this
        job = client.submit("digits", x)
        hit = job.wait(timeout=30)
        by_id = client.result(job.id)
    assert job.cached and hit.cached and not computed.cached
    t, c = hit.timing, computed.timing
    assert (t.queue_ms, t.batch_wait_ms, t.compute_ms, t.processing_ms, t.batch_size) == (0, 0, 0, 0, 0)
    assert t.enqueued_at > c.finished_at and t.end_to_end_ms is not None and t.end_to_end_ms < 250
    assert t.computed is not None
    assert (t.computed.received_at, t.computed.queue_ms, t.computed.compute_ms, t.computed.batch_size) == (
        c.received_at,
        c.queue_ms,
        c.compute_ms,
        c.batch_size,
    )
    # result(id) from the client that was answered from the cache tells the same story.
    assert by_id.cached and by_id.timing == hit.timing
    # The wire form: computed_* fields, which an older reader (its fields only) skips.
    doc = hit.timing.to_dict()
    assert doc["computed_queue_ms"] == c.queue_ms and doc["queue_ms"] == 0
    assert Timing.from_dict(doc) == hit.timing
    old_fields = set(Timing.__dataclass_fields__) - {"computed"}
    assert Timing(**{k: v for k, v in doc.items() if k in old_fields}).queue_ms == 0


def test_result_by_id_of_a_job_computed_for_its_caller_is_not_cached(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    with Client(private) as client:
        job = client.submit("digits", fresh_input())
        waited = job.wait(timeout=30)
        by_id = client.result(job.id)
    with Client(private) as elsewhere:  # another process polling by id, as a web backend does
        polled = elsewhere.result(job.id)
    assert not waited.cached and not by_id.cached and not polled.cached
    assert by_id.timing.queue_ms == waited.timing.queue_ms and by_id.timing.computed is None


def test_async_client_cache_hit_timing_and_result_agree(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    async def run() -> None:
        x = fresh_input()
        async with AsyncClient(private) as client:
            computed = await (await client.submit("digits", x)).wait(timeout=30)
            job = await client.submit("digits", x)
            hit = await job.wait(timeout=30)
            by_id = await client.result(job.id)
        assert hit.cached and hit.timing.queue_ms == 0 and hit.timing.computed is not None
        assert hit.timing.computed.queue_ms == computed.timing.queue_ms
        assert by_id.cached and by_id.timing == hit.timing

    asyncio.run(run())


# --- 6: status shows every model queue, served or not -----------------------------------


def test_status_shows_a_queue_no_live_worker_serves_with_its_depth(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    with Client(private) as client:
        for _ in range(4):  # one message each: the depth counts messages
            client.submit("digits", fresh_input(), variant="int8")
    doc = json.loads(inferq(private, "status", "--json").stdout)
    int8 = doc["models"]["digits:int8"]
    assert int8["queue"] == queue_name("digits", "int8") and int8["depth"] >= 4
    assert int8["workers"] == 0 and int8["served"] is False
    assert doc["models"]["digits:fp32"]["served"] is True
    row = next(
        line for line in inferq(private, "status").stdout.splitlines() if line.startswith("digits:int8")
    )
    assert "no live worker serves it" in row


# --- 3: a submit to a variant no live worker serves -------------------------------------


def test_submit_wait_warns_up_front_and_times_out_naming_the_unserved_variant(
    fp32_workers: WorkerProcess, private: Settings, tmp_path: Path
) -> None:
    np.save(tmp_path / "x.npy", fresh_input())
    proc = inferq(
        private, "submit", "digits:fp16", "--input", str(tmp_path / "x.npy"), "--wait", "--timeout", "1"
    )
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("inferq: warning: no live worker serves digits:fp16"), proc.stderr
    assert "inferq.digits.fp16" in lines[0] and "digits:fp32" in lines[0]
    assert lines[-1].startswith("inferq: Timeout: ") and lines[-1].endswith(
        "no live worker serves digits:fp16"
    )
    assert proc.returncode == 2 and len(lines) == 2


def test_the_api_warns_once_per_unserved_variant_and_its_timeouts_name_it(
    fp32_workers: WorkerProcess, private: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="producers")
    with Client(private) as client:
        jobs = [client.submit("digits", fresh_input(), variant="savedmodel") for _ in range(2)]
        served = client.submit("digits", fresh_input())
        warnings = [r.getMessage() for r in caplog.records if "no live worker serves" in r.getMessage()]
        assert warnings == [warnings[0]] and "digits:savedmodel" in warnings[0]
        with pytest.raises(Timeout, match=r"no live worker serves digits:savedmodel$"):
            jobs[0].wait(timeout=0.5)
        with pytest.raises(Timeout, match=r"no live worker serves digits:savedmodel$"):
            client.wait_all([served, *jobs], timeout=0.5)
        served.wait(timeout=30)
        with pytest.raises(Timeout) as slow:  # a served variant that is merely slow: no such note
            client.submit("digits", fresh_input()).wait(timeout=0.000001)
        assert "no live worker" not in str(slow.value)

    async def on_a_loop() -> None:
        async with AsyncClient(private) as client:
            job = await client.submit("digits", fresh_input(), variant="savedmodel")
            with pytest.raises(Timeout, match=r"no live worker serves digits:savedmodel$"):
                await job.wait(timeout=0.5)

    asyncio.run(on_a_loop())


# --- 8: Celery's eta / countdown ---------------------------------------------------------


def test_a_celery_countdown_is_refused_naming_eta_not_silently_run_early(
    fp32_workers: WorkerProcess, private: Settings
) -> None:
    jid = "eta-" + uuid.uuid4().hex
    with Client(private) as client:
        client.app.send_task(
            PREDICT_TASK,
            args=[request(encode_inputs({"image": fresh_input()}))],
            task_id=jid,
            queue=queue_name("digits", "fp32"),
            countdown=5,
        )
        t0 = time.monotonic()
        with pytest.raises(BadInput, match="eta"):
            client.result(jid, wait=True, timeout=30)
        assert time.monotonic() - t0 < 4, "answered only after the countdown"


# --- 15: output for people --------------------------------------------------------------


def test_results_print_short_numbers_and_no_unknown_end_to_end(
    fp32_workers: WorkerProcess, private: Settings, tmp_path: Path
) -> None:
    np.save(tmp_path / "x.npy", digits(private.models_dir, 1, start=11)[0])
    shown = inferq(
        private, "submit", "digits:fp32", "--input", str(tmp_path / "x.npy"), "--wait", "--no-cache"
    )
    assert shown.returncode == 0, shown.stderr
    values = re.search(r"probs \[10\] float32 +top-1 \d: \[(.*)\]", shown.stdout)
    assert values is not None, shown.stdout
    for v in values.group(1).split(", "):
        digits_shown = re.sub(r"e[-+]\d+$", "", v).replace(".", "").replace("-", "").lstrip("0")
        assert len(digits_shown) <= 4, f"{v} in {shown.stdout}"
    job_id = shown.stdout.split()[1].rstrip(":")
    by_id = inferq(private, "result", job_id)
    assert by_id.returncode == 0 and "?" not in by_id.stdout and "compute" in by_id.stdout, by_id.stdout
    full = json.loads(inferq(private, "result", job_id, "--json").stdout)
    with Client(private) as client:
        exact = client.result(job_id).outputs["probs"]
    assert full["outputs"]["probs"] == exact.tolist()  # --json keeps every digit
