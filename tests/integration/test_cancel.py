"""Cancel: a queued job is never computed and ends ``cancelled``; nothing else changes.

Real worker processes and a real redis-server; the worker is paused (SIGSTOP) so that
the job is certainly queued, not yet taken in, when it is cancelled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.errors import JobCancelled
from tasks.keys import inflight_key, result_key
from tasks.kombu_layout import UNACKED_INDEX
from tasks.schema import CancelOutcome, JobStatus
from tasks.settings import Settings
from tasks.wire import StatusRecord
from tests.conftest import ROOT, WorkerProcess, on_db, queue_depth, started_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cancel_settings(settings: Settings) -> Settings:
    return on_db(settings, 9)


@pytest.fixture(scope="module")
def worker(cancel_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(cancel_settings, ["digits:fp32"], tmp_path_factory.mktemp("cancel") / "worker.log")
    yield w
    os.kill(w.proc.pid, signal.SIGCONT)
    w.stop()


@pytest.fixture()
def client(cancel_settings: Settings) -> Iterator[Client]:
    with Client(cancel_settings) as c:
        yield c


def fresh_input(models_dir: Path) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[3]
    return (x + np.float32(time.time() % 1) * 1e-3).astype(np.float32)


def drained(client: Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queue_depth(client.broker, "digits", "fp32") == 0 and client.broker.zcard(UNACKED_INDEX) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the worker did not take and acknowledge the queued job")


def test_a_queued_job_cancelled_is_never_computed_and_stays_cancelled(
    worker: WorkerProcess, client: Client, models_dir: Path
):
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        job = client.submit("digits", fresh_input(models_dir), variant="fp32")
        assert client.status(job.id) is JobStatus.QUEUED
        assert job.cancel() is CancelOutcome.CANCELLED
        assert client.status(job.id) is JobStatus.CANCELLED
        assert not client.backend.exists(inflight_key(job.id))
        with pytest.raises(JobCancelled, match="cancelled before a worker started it"):
            job.wait(timeout=5)  # the cancel is published: a waiter wakes at once
        pubsub = client.backend.pubsub()
        pubsub.subscribe(result_key(job.id))
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    drained(client)
    time.sleep(0.5)
    published = []
    while (msg := pubsub.get_message(timeout=0.2)) is not None:
        if msg["type"] == "message":
            published.append(msg["data"])
    pubsub.close()
    assert published == [], "nothing may be published after the cancel"
    record = StatusRecord.parse(client.backend.get(result_key(job.id)), job.id)
    assert record is not None and record.job_status() is JobStatus.CANCELLED
    assert "skipped 1 cancelled job" in worker.log_text()
    assert job.cancel() is CancelOutcome.ALREADY_CANCELLED


def test_a_finished_unknown_or_running_job_is_left_alone_and_the_outcome_says_so(
    worker: WorkerProcess, client: Client, models_dir: Path
):
    done = client.submit("digits", fresh_input(models_dir), variant="fp32")
    done.wait(timeout=30)
    assert client.cancel(done.id) is CancelOutcome.FINISHED
    assert client.status(done.id) is JobStatus.SUCCESS
    assert client.cancel("0" * 32) is CancelOutcome.UNKNOWN
    assert client.status("0" * 32) is JobStatus.UNKNOWN
    running = "r" * 32
    client.backend.set(result_key(running), StatusRecord.started(running).encode(), ex=60)
    assert client.cancel(running) is CancelOutcome.RUNNING
    assert client.status(running) is JobStatus.RUNNING


def test_a_job_submitted_again_after_its_cancel_is_computed(
    worker: WorkerProcess, client: Client, models_dir: Path
):
    x = fresh_input(models_dir)
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        first = client.submit("digits", x, variant="fp32")
        assert first.cancel() is CancelOutcome.CANCELLED
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    drained(client)
    again = client.submit("digits", x, variant="fp32")
    assert again.id == first.id and again.enqueued
    assert again.wait(timeout=30).outputs["probs"].shape == (10,)


def test_a_no_cache_job_can_be_cancelled_too(worker: WorkerProcess, client: Client, models_dir: Path):
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        job = client.submit("digits", fresh_input(models_dir), variant="fp32", no_cache=True)
        assert client.status(job.id) is JobStatus.QUEUED
        assert job.cancel() is CancelOutcome.CANCELLED
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    drained(client)
    assert client.status(job.id) is JobStatus.CANCELLED


def test_celerys_revoke_cancels_an_inferq_job_like_client_cancel(
    worker: WorkerProcess, client: Client, cancel_settings: Settings, models_dir: Path
):
    # digits:int8 is not served here: the job stays queued while the worker answers revoke.
    job = client.submit("digits", fresh_input(models_dir), variant="int8")
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.celery_app", "control", "revoke", job.id,
         "--destination", str(worker.hostname), "--timeout", "20"],
        env={**os.environ, **cancel_settings.env()}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"'{job.id}': 'cancelled'" in proc.stdout
    assert client.status(job.id) is JobStatus.CANCELLED


def test_a_result_stored_after_the_cancel_is_discarded_and_never_published(own_redis, tmp_path: Path):
    """The narrow window: a worker took the job in before the cancel and computes it anyway."""
    import redis as redis_py

    from workers.serving.store import Outcome, ResultWriter

    r = redis_py.Redis.from_url(own_redis.url)
    jid = "w" * 32
    cancelled = StatusRecord.cancelled(jid).encode()
    r.set(result_key(jid), cancelled)
    r.set(inflight_key(jid), b"1:0")
    pubsub = r.pubsub()
    pubsub.subscribe(result_key(jid))
    writer = ResultWriter(r, ttl_s=60)
    writer.started([jid])
    writer.store([Outcome(jid, result={"v": 1, "outputs": {}})])
    time.sleep(0.2)
    kinds = [m["type"] for m in iter(lambda: pubsub.get_message(timeout=0.1), None)]
    assert "message" not in kinds
    assert r.get(result_key(jid)) == cancelled and not r.exists(inflight_key(jid))
    assert writer.cancelled([jid, "x" * 32]) == {jid}
    pubsub.close()
    r.close()


def test_an_unguessable_handle_stands_for_its_job_in_status_result_and_cancel(
    worker: WorkerProcess, client: Client, models_dir: Path
):
    job = client.submit("digits", fresh_input(models_dir), variant="fp32")
    h1, h2 = job.handle(), client.handle(job.id)
    assert h1 != h2 and job.id not in h1 and len(h1) == 34 and h1.startswith("h-")
    assert client.resolve(h1) == client.resolve(h2) == job.id
    res = client.result(h1, wait=True, timeout=30)
    assert res.job_id == job.id and res.outputs["probs"].shape == (10,)
    assert client.status(h2) is JobStatus.SUCCESS
    assert client.cancel(h2) is CancelOutcome.FINISHED
    from tasks.errors import JobNotFound

    with pytest.raises(JobNotFound, match="no job has the handle"):
        client.status("h-" + "0" * 32)


def test_wait_without_a_timeout_is_bounded_by_the_settings(
    worker: WorkerProcess, cancel_settings: Settings, models_dir: Path
):
    from tasks.errors import Timeout

    with Client(cancel_settings.with_(wait_timeout_s=1.0)) as c:
        # digits:int8 is not served here: the job never finishes.
        job = c.submit("digits", fresh_input(models_dir), variant="int8")
        t0 = time.monotonic()
        with pytest.raises(Timeout, match=r"timed out after 1\.0 s"):
            job.wait()
        assert time.monotonic() - t0 < 3
        job.cancel()


def test_health_says_what_a_readiness_probe_needs(worker: WorkerProcess, client: Client, tmp_path: Path):
    h = client.health(timeout=5)
    assert h["broker"] and h["results"] and h["ready"]
    assert worker.hostname in h["workers"] and "digits:fp32" in h["models"]
    with Client(
        Settings(broker_url="redis://127.0.0.1:1/0", models_dir=tmp_path, client_timeout_s=2)
    ) as down:
        t0 = time.monotonic()
        h = down.health()
        assert time.monotonic() - t0 < 3
        assert h["ready"] is False and h["broker"] is False and "broker_error" in h


def test_jobs_of_a_bulk_message_cancelled_while_queued_are_left_out_and_the_rest_run(
    worker: WorkerProcess, client: Client, models_dir: Path
):
    xs = np.stack([fresh_input(models_dir) + np.float32(i * 1e-4) for i in range(10)])
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        jobs = client.submit_many("digits", xs, variant="fp32", chunk_size=10)  # one bulk tensor message
        assert jobs[2].cancel() is CancelOutcome.CANCELLED
        assert jobs[7].cancel() is CancelOutcome.CANCELLED
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    results = client.wait_all(jobs, timeout=30)
    assert [i for i, r in enumerate(results) if isinstance(r, Exception)] == [2, 7]
    assert all(isinstance(results[i], JobCancelled) for i in (2, 7))
    drained(client)
    assert "skipped 2 cancelled job" in worker.log_text()
