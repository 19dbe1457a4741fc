"""No job is lost when workers are SIGKILLed again and again under steady submission,
and a claim left by a lost message does not hold up a resubmit for long.

Two worker slots serve digits fp32 and int8 while one producer thread submits distinct
inputs at a steady rate, the way a web backend would. A killer SIGKILLs a random slot's
worker at a random moment after it came up (mid-fetch, mid-batch, mid-store, idle in
its blocking wait: wherever it happens to be) and starts a new one in its place. Every
job must end with a good result, and nothing may stay queued, unacknowledged or
claimed. A killed worker's messages come back after the visibility timeout (3 s here).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import LocalRedis
from producers.client import Client
from producers.job import Job
from tasks.keys import queue_name, result_key
from tasks.kombu_layout import UNACKED, UNACKED_INDEX, queue_lists
from tasks.settings import Settings
from tasks.wire import Result
from tests.conftest import WorkerProcess, on_db, queue_depth

pytestmark = pytest.mark.integration

VISIBILITY_S = 3
MODELS = ["digits:fp32", "digits:int8"]
MIN_KILLS = int(os.environ.get("KS_KILLS", 10))
MIN_JOBS = int(os.environ.get("KS_JOBS", 10_000))
RATE = 400  # jobs/s the producer aims at


class Submitter(threading.Thread):
    """Submits distinct inputs one by one at ``RATE`` jobs/s until told to stop."""

    def __init__(self, client: Client, base: np.ndarray) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client = client
        self.base = base
        self.jobs: list[Job] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        i = 0
        try:
            while not self.stop.is_set():
                x = self.base[i % len(self.base)] + np.float32(i) * np.float32(1e-5)
                self.jobs.append(self.client.submit("digits", x, variant=MODELS[i % 2].split(":")[1]))
                i += 1
                ahead = i / RATE - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def state(client: Client, jobs: list[Job]) -> str:
    """Where the jobs are, for a failure message."""
    done = sum(int(client.backend.exists(result_key(j.id))) for j in jobs)
    queued = sum(queue_depth(client.broker, *m.split(":")) for m in MODELS)
    return f"{done} results stored, {queued} messages queued, {client.broker.zcard('unacked_index')} unacked"


def test_no_job_is_lost_when_workers_are_killed_repeatedly_under_load(
    redis_server: LocalRedis, models_dir: Path, tmp_path: Path
) -> None:
    # A fresh database of the session's server: nothing another test left behind.
    settings = on_db(
        Settings(models_dir=models_dir, visibility_timeout_s=VISIBILITY_S, broker_url=redis_server.url), 7
    )
    rng = random.Random(9)
    base = np.load(models_dir / "digits" / "data" / "heldout_x.npy").astype(np.float32)
    base = base + np.float32(time.time() % 1)  # no input any earlier run cached
    started: list[WorkerProcess] = []

    def start(slot: int) -> WorkerProcess:
        w = WorkerProcess(settings, MODELS, tmp_path / f"worker-{slot}-{len(started)}.log")
        started.append(w)
        return w

    with Client(settings) as client:
        slots = [start(0), start(1)]
        for w in slots:
            w.wait_ready(client)
        submitter = Submitter(client, base)
        submitter.start()
        kills = held_at_kill = 0
        try:
            while kills < MIN_KILLS or len(submitter.jobs) < MIN_JOBS:
                assert submitter.is_alive(), f"the producer stopped: {submitter.error!r}"
                slot = rng.randrange(2)
                victim = slots[slot]
                victim.wait_ready(client, timeout=120)
                time.sleep(rng.uniform(0.0, 1.5))  # a random moment in its life
                held_at_kill += int(client.broker.zcard(UNACKED_INDEX)) > 0
                victim.proc.kill()
                victim.proc.wait()
                kills += 1
                slots[slot] = start(slot)
        finally:
            submitter.stop.set()
            submitter.join(timeout=30)
        assert submitter.error is None, submitter.error
        jobs = submitter.jobs
        try:
            try:
                results = client.wait_all(jobs, timeout=180)
            except Exception as exc:
                raise AssertionError(f"{exc}; {state(client, jobs)}") from None
            lost = [j.id for j, r in zip(jobs, results, strict=True) if not isinstance(r, Result)]
            assert not lost, (
                f"{len(lost)} of {len(jobs)} jobs did not finish after {kills} kills, e.g. {lost[:3]}: "
                f"{[results[jobs.index(j)] for j in jobs if j.id in lost[:3]]}"
            )
            # A kill between storing a batch and acking it leaves results stored and
            # their messages unacknowledged; the live workers take those back once their
            # lease lapses and run them again (same results). Give them that long, with
            # the workers still running, before asserting that nothing is left.
            give_up = time.monotonic() + 4 * VISIBILITY_S + 10
            while time.monotonic() < give_up and (
                client.broker.zcard(UNACKED_INDEX)
                or any(queue_depth(client.broker, *m.split(":")) for m in MODELS)
            ):
                time.sleep(0.25)
        finally:
            for w in started:
                w.stop()
        assert kills >= MIN_KILLS and len(jobs) >= MIN_JOBS
        assert held_at_kill >= MIN_KILLS // 2, "most kills should land while messages are in flight"
        assert client.broker.zcard(UNACKED_INDEX) == 0
        assert client.broker.hlen(UNACKED) == 0
        for m in MODELS:
            assert queue_depth(client.broker, *m.split(":")) == 0


def test_a_stale_claim_blocks_a_resubmit_for_no_longer_than_the_visibility_timeout(
    redis_server: LocalRedis, models_dir: Path, tmp_path: Path
) -> None:
    settings = on_db(
        Settings(models_dir=models_dir, visibility_timeout_s=VISIBILITY_S, broker_url=redis_server.url), 8
    )
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[0] + np.float32(time.time() % 1)
    w = WorkerProcess(settings, ["digits:fp32"], tmp_path / "worker.log")
    with Client(settings) as client:
        try:
            w.wait_ready(client)
            os.kill(w.proc.pid, signal.SIGSTOP)  # the job stays queued...
            first = client.submit("digits", x, variant="fp32")
            for lst in queue_lists(queue_name("digits", "fp32")):
                client.broker.delete(lst)  # ...and is lost, its claim left behind
            client.submit("digits", x, variant="fp32")
            assert queue_depth(client.broker, "digits", "fp32") == 0, (
                "a fresh claim is shared, not sent again"
            )
            time.sleep(VISIBILITY_S + 0.5)
            again = client.submit("digits", x, variant="fp32")
            assert queue_depth(client.broker, "digits", "fp32") == 1, (
                "a stale claim must not block the resubmit"
            )
            os.kill(w.proc.pid, signal.SIGCONT)
            assert again.wait(timeout=30).job_id == first.id
            assert first.wait(timeout=30).outputs["probs"].shape == (10,), (
                "the first caller gets the result too"
            )
        finally:
            os.kill(w.proc.pid, signal.SIGCONT)
            w.stop()
