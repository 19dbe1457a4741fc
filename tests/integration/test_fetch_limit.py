"""A worker holds about ``capacity`` jobs, not ``capacity`` messages
(``workers/broker/fetcher.py``, ``message_limit``). A bulk message holds hundreds of
jobs; a worker that took up to ``capacity`` (128) messages at once held a whole backlog
of them (their tensors in its memory, none left for another worker), and read every
one's inputs before its first batch ran. Real worker process, private redis-server; the
worker is paused (SIGSTOP) while the backlog is queued."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from ops.local.redis_server import LocalRedis
from producers.client import Client
from tasks.kombu_layout import UNACKED
from tasks.settings import Settings
from tests.conftest import WorkerProcess, started_worker
from workers.broker.fetcher import MIN_MESSAGES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MESSAGES, CHUNK = 16, 128


@pytest.fixture()
def backlog_settings(own_redis: LocalRedis, models_dir: Path) -> Settings:
    return Settings(broker_url=own_redis.url, models_dir=models_dir, log_level="INFO")


@pytest.fixture()
def worker(backlog_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = started_worker(backlog_settings, ["digits:fp32"], tmp_path / "worker.log")
    yield w
    os.kill(w.proc.pid, signal.SIGCONT)
    w.stop()


def test_a_worker_with_a_backlog_of_bulk_messages_holds_a_few_at_a_time(
    worker: WorkerProcess, backlog_settings: Settings, models_dir: Path
) -> None:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[:1]
    xs = np.repeat(x, MESSAGES * CHUNK, axis=0).astype(np.float32)
    broker = redis.Redis.from_url(backlog_settings.broker_url)
    held: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            held.append(int(broker.hlen(UNACKED)))
            done.wait(0.002)

    with Client(backlog_settings) as c:
        os.kill(worker.proc.pid, signal.SIGSTOP)
        jobs = c.submit_many("digits", xs, chunk_size=CHUNK, no_cache=True)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        os.kill(worker.proc.pid, signal.SIGCONT)
        try:
            results = c.wait_all(jobs, timeout=120)
        finally:
            done.set()
            watcher.join(5)
    assert [type(r).__name__ for r in results] == ["Result"] * len(xs)
    assert held and max(held) >= 1, "the watch never saw the worker hold a message"
    # Before: all sixteen at once (capacity 128 messages).
    assert max(held) <= MIN_MESSAGES, f"held up to {max(held)} bulk messages at once"
    assert broker.hlen(UNACKED) == 0
