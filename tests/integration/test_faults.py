"""Nothing is lost when a worker is killed or Redis restarts: every job ends with a result.

Each test runs on its own ``redis-server`` (with AOF, as production should), real worker
processes and the digits model, with a 3 s visibility timeout so that a dead worker's
jobs come back within seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import LocalRedis, free_port
from producers.client import Client
from producers.job import Job
from tasks.keys import result_key
from tasks.settings import Settings
from tasks.wire import Result
from tests.conftest import WorkerProcess, queue_depth

pytestmark = pytest.mark.integration

VISIBILITY_S = 3


@pytest.fixture()
def aof_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = LocalRedis(appendonly=True, workdir=folder).start()
    yield server
    server.stop()


@pytest.fixture()
def fault_settings(aof_redis: LocalRedis, models_dir: Path) -> Settings:
    return Settings(
        broker_url=aof_redis.url, models_dir=models_dir, visibility_timeout_s=VISIBILITY_S, metrics_port=0
    )


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts digits:fp32 workers; stops (and first resumes) whichever are left at the end."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, *extra: str) -> WorkerProcess:
        w = WorkerProcess(settings, ["digits:fp32"], tmp_path / f"worker-{len(started)}.log", *extra)
        started.append(w)
        with Client(settings) as c:
            w.wait_ready(c)
        return w

    yield start
    for w in started:
        if w.alive:
            resume(w)
        w.stop()


def fresh_inputs(models_dir: Path, n: int) -> np.ndarray:
    """``n`` distinct digits images no other test sent (so none comes from the cache)."""
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")
    x = np.resize(x, (n, *x.shape[1:]))
    jitter = np.float32(time.time() % 1) * 1e-3 + np.arange(n, dtype=np.float32)[:, None, None, None] * 1e-6
    return (x + jitter).astype(np.float32)


def done_count(client: Client, jobs: list[Job]) -> int:
    return int(client.backend.exists(*[result_key(j.id) for j in jobs]))


def pause(w: WorkerProcess) -> None:
    os.kill(w.proc.pid, signal.SIGSTOP)


def resume(w: WorkerProcess) -> None:
    os.kill(w.proc.pid, signal.SIGCONT)


def kill_mid_batch(client: Client, worker: WorkerProcess, jobs: list[Job], after: int) -> int:
    """Resume the paused ``worker`` (its jobs all queued meanwhile) and SIGKILL it once
    ``after`` jobs are done while it holds unacknowledged messages."""
    resume(worker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if done_count(client, jobs) >= after and client.broker.zcard("unacked_index") > 0:
            worker.proc.kill()
            worker.proc.wait()
            return int(client.broker.zcard("unacked_index"))
        time.sleep(0.002)
    raise AssertionError(f"the worker did not get going: {worker.log_text()[-2000:]}")


def taken_back_metric(port: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "inferq_messages_taken_back_total" and s.labels == {"model": "digits", "variant": "fp32"}
    )


def assert_every_job_has_one_good_result(client: Client, jobs: list[Job], timeout: float) -> None:
    results = client.wait_all(jobs, timeout=timeout)
    failed = [r for r in results if not isinstance(r, Result)]
    assert not failed, f"{len(failed)} job(s) failed, e.g. {failed[:3]}"
    assert len({r.job_id for r in results if isinstance(r, Result)}) == len(jobs)
    assert all(r.outputs["probs"].shape == (10,) for r in results if isinstance(r, Result))


def unacked_after_acks(client: Client, timeout: float = 10.0) -> int:
    """Messages still unacknowledged once the worker had time to ack its last batch: a
    worker stores a batch's results and then acks its messages, so a client can hold
    every result a moment before the last ack lands (seen in CI: one batch of 16)."""
    deadline = time.monotonic() + timeout
    while (n := int(client.broker.zcard("unacked_index"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def test_sigkill_mid_batch_loses_nothing_once_a_worker_runs_again(
    fault_settings: Settings, workers: Callable[..., WorkerProcess], models_dir: Path
) -> None:
    with Client(fault_settings) as client:
        w = workers(fault_settings, "--max-batch-size", "16")
        pause(w)
        jobs = client.submit_many("digits", fresh_inputs(models_dir, 3000), variant="fp32", chunk_size=1)
        held = kill_mid_batch(client, w, jobs, after=100)
        assert held > 0 and done_count(client, jobs) < len(jobs)
        workers(fault_settings)  # a worker is running again
        assert_every_job_has_one_good_result(client, jobs, timeout=90)
        assert unacked_after_acks(client) == 0
        assert queue_depth(client.broker, "digits", "fp32") == 0


def test_the_surviving_worker_takes_over_a_killed_workers_jobs(
    fault_settings: Settings, workers: Callable[..., WorkerProcess], models_dir: Path
) -> None:
    with Client(fault_settings) as client:
        doomed = workers(fault_settings, "--max-batch-size", "16")
        port = free_port()
        survivor = workers(fault_settings, "--metrics-port", str(port))
        pause(doomed)
        pause(survivor)  # until the doomed one is dead: everything goes to it
        jobs = client.submit_many("digits", fresh_inputs(models_dir, 3000), variant="fp32", chunk_size=1)
        held = kill_mid_batch(client, doomed, jobs, after=100)
        assert held > 0
        resume(survivor)
        assert_every_job_has_one_good_result(client, jobs, timeout=90)
        assert survivor.alive
        assert "took back" in survivor.log_text(), "the survivor did not take the dead worker's messages"
        assert unacked_after_acks(client) == 0
        # Exactly the messages the dead worker held came back, once each, and operators see it.
        assert taken_back_metric(port) == held


def test_redis_restart_with_aof_keeps_queued_jobs_and_everyone_reconnects(
    aof_redis: LocalRedis, fault_settings: Settings, workers: Callable[..., WorkerProcess], models_dir: Path
) -> None:
    with Client(fault_settings) as client:
        w = workers(fault_settings)
        assert client.submit("digits", fresh_inputs(models_dir, 1)[0]).wait(timeout=30).job_id
        pause(w)  # jobs stay queued across the restart
        jobs = client.submit_many("digits", fresh_inputs(models_dir, 400), variant="fp32", chunk_size=8)
        waited: list[object] = []
        waiter = threading.Thread(target=lambda: waited.extend(client.wait_all(jobs, timeout=120)))
        waiter.start()  # a client already waiting when Redis goes away
        time.sleep(1.5)  # appendfsync everysec: the queued jobs are on disk
        aof_redis.proc.kill()  # type: ignore[union-attr]  # a crash, not a clean shutdown
        aof_redis.proc.wait()  # type: ignore[union-attr]
        aof_redis.start()  # same port, same folder: Redis replays its append-only file
        # Every message is still queued: an idle worker waits without taking anything
        # (its doorbell hears key names), so none is in a paused worker's hands.
        assert queue_depth(client.broker, "digits", "fp32") == 400 // 8
        resume(w)
        waiter.join(timeout=150)
        assert len(waited) == len(jobs) and all(isinstance(r, Result) for r in waited), waited[:3]
        assert w.alive
        # The same client and worker carry on with new jobs.
        assert client.submit("digits", fresh_inputs(models_dir, 1)[0]).wait(timeout=30).job_id
