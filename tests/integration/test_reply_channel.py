"""One reply channel per client: a job a client sends is answered on its channel, a
batch's records in one message, with no subscription per job (a real worker process and
a private redis-server; what Redis saw is read with ``MONITOR``)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from producers.async_client import AsyncClient
from producers.async_listener import AsyncResultListener
from producers.client import Client
from producers.listener import ResultListener
from tasks import constants as C
from tasks.celery_message import encode_task_message
from tasks.codec import encode_inputs
from tasks.keys import queue_name, random_job_id, result_key
from tasks.settings import Settings
from tasks.wire import Request
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class Monitor:
    """Every command Redis runs (scripts' included) while it is open."""

    def __init__(self, url: str) -> None:
        # No read timeout: a timed-out read leaves redis-py's connection closed under
        # the next one. ``close`` cuts the connection instead.
        self._client = redis.Redis.from_url(url)
        self.commands: list[str] = []
        #: Those a client sent (not run inside a Lua script).
        self.sent: list[str] = []
        #: The same, each with the local port of the connection that sent it.
        self.sent_from: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    def _run(self) -> None:
        try:
            with self._client.monitor() as m:
                self._ready.set()
                while not self._stop.is_set():
                    c = m.next_command()
                    self.commands.append(c["command"])
                    if c.get("client_type") != "lua":
                        self.sent.append(c["command"])
                        self.sent_from.append((int(c.get("client_port") or 0), c["command"]))
        except Exception:
            if not self._stop.is_set():
                raise

    def sent_by(self, ports: set[int]) -> list[str]:
        """The commands sent by the connections with these local ports (one process's:
        ``local_ports``), not the worker's or anyone else's."""
        return [command for port, command in self.sent_from if port in ports]

    def close(self) -> list[str]:
        time.sleep(0.3)  # the last commands reach the monitor
        self._stop.set()
        self._client.connection_pool.disconnect()  # the blocked read ends
        self._thread.join(5)
        self._client.close()
        return self.commands


def local_ports(pool: Any) -> set[int]:
    """The local ports of a redis-py connection pool's connections, sync or asyncio."""
    ports: set[int] = set()
    if hasattr(pool, "_connections"):  # a blocking pool keeps every connection it made here
        conns = list(pool._connections)
    else:
        conns = [*pool._available_connections, *pool._in_use_connections]
    for conn in conns:
        sock = getattr(conn, "_sock", None)
        writer = getattr(conn, "_writer", None)
        if sock is not None:
            ports.add(sock.getsockname()[1])
        elif writer is not None:
            ports.add(writer.get_extra_info("sockname")[1])
    return ports


@pytest.fixture()
def monitor(settings: Settings) -> Iterator[Monitor]:
    m = Monitor(settings.result_backend)
    yield m
    if not m._stop.is_set():
        m.close()


def fresh(models_dir: Path, n: int = 1) -> np.ndarray:
    rng = np.random.default_rng(time.monotonic_ns())
    return rng.random((n, 28, 28, 1), dtype=np.float32)


def subscribes(commands: list[str], jid: str) -> list[str]:
    return [c for c in commands if c.upper().startswith("SUBSCRIBE") and result_key(jid) in c]


def publishes_to(commands: list[str], channel: str) -> list[str]:
    return [c for c in commands if c.upper().startswith("PUBLISH") and f"PUBLISH {channel}" in c]


def test_a_sent_job_is_answered_on_the_reply_channel_with_no_subscription_of_its_own(
    digits_worker: WorkerProcess, client: Client, monitor: Monitor, models_dir: Path
) -> None:
    job = client.submit("digits", fresh(models_dir)[0], variant="fp32")
    assert job.wait(timeout=30).outputs["probs"].shape == (10,)
    commands = monitor.close()
    assert subscribes(commands, job.id) == []
    assert not [c for c in commands if c.upper().startswith("UNSUBSCRIBE")]
    assert len(publishes_to(commands, client.listener.reply_channel)) == 1
    # still stored and published under its own key (AsyncResult, producers sharing it)
    assert [c for c in commands if c.upper().startswith(f"PUBLISH {result_key(job.id)}".upper())]


def test_bulk_results_arrive_in_one_message_per_batch(
    digits_worker: WorkerProcess, client: Client, monitor: Monitor, models_dir: Path
) -> None:
    jobs = client.submit_many("digits", fresh(models_dir, 300), variant="fp32", chunk_size=100)
    results = client.wait_all(jobs, timeout=60)
    assert all(not isinstance(r, Exception) for r in results)
    commands = monitor.close()
    batches = publishes_to(commands, client.listener.reply_channel)
    assert 1 <= len(batches) < 300 // 8, f"{len(batches)} reply messages for 300 jobs"
    assert not [c for c in commands if c.upper().startswith("SUBSCRIBE") and C.RESULT_KEY_PREFIX in c]


def test_a_job_shared_with_another_producer_still_gets_its_result(
    digits_worker: WorkerProcess, settings: Settings, models_dir: Path
) -> None:
    x = fresh(models_dir)[0]
    with Client(settings) as sender, Client(settings) as sharer:
        sender.ping()
        sharer.ping()
        os.kill(digits_worker.proc.pid, signal.SIGSTOP)  # the job stays queued: the second one shares it
        try:
            mine = sender.submit("digits", x, variant="fp32")
            theirs = sharer.submit("digits", x, variant="fp32")
            assert mine.id == theirs.id and mine.enqueued and not theirs.enqueued
        finally:
            os.kill(digits_worker.proc.pid, signal.SIGCONT)
        a, b = mine.wait(timeout=30), theirs.wait(timeout=30)
    np.testing.assert_array_equal(a.outputs["probs"], b.outputs["probs"])


def test_a_plain_celery_reply_to_is_ignored(
    digits_worker: WorkerProcess, client: Client, monitor: Monitor, models_dir: Path
) -> None:
    """A Celery client names its RPC reply queue (a uuid): never published to."""
    info = client.model_info("digits", "fp32")
    jid = random_job_id()
    request = Request("digits", "fp32", encode_inputs({"image": fresh(models_dir)[0]}), version=info.version)
    rpc_queue = "3f1c9a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
    lst, message = encode_task_message(
        jid, request.to_wire(), queue=queue_name("digits", "fp32"), priority=3, reply_to=rpc_queue
    )
    client.broker.lpush(lst, message)
    assert client.result(jid, wait=True, timeout=30).outputs["probs"].shape == (10,)
    commands = monitor.close()
    assert not [c for c in commands if rpc_queue in c and c.upper().startswith("PUBLISH")]


def test_the_async_client_is_answered_on_its_reply_channel(
    digits_worker: WorkerProcess, settings: Settings, monitor: Monitor, models_dir: Path
) -> None:
    async def run() -> tuple[list[str], str]:
        async with AsyncClient(settings) as c:
            jobs = await c.submit_many("digits", fresh(models_dir, 40), variant="fp32", chunk_size=20)
            one = await c.submit("digits", fresh(models_dir)[0], variant="fp32")
            results = await c.wait_all([*jobs, one], timeout=60)
            assert all(not isinstance(r, Exception) for r in results)
            return [j.id for j in [*jobs, one]], c.listener.reply_channel

    ids, channel = asyncio.run(run())
    commands = monitor.close()
    assert not [c for c in commands if c.upper().startswith("SUBSCRIBE") and C.RESULT_KEY_PREFIX in c]
    assert 1 <= len(publishes_to(commands, channel)) <= len(ids) // 2


@pytest.mark.parametrize("times_kept", [True, False], ids=["times kept", "times let go"])
def test_bulk_results_not_kept_while_sending_are_read_again_not_subscribed(
    digits_worker: WorkerProcess,
    client: Client,
    settings: Settings,
    monitor: Monitor,
    models_dir: Path,
    times_kept: bool,
) -> None:
    """Past ``KEEP_ARRIVED_MAX`` an arrival nobody waits for yet is dropped, its arrival
    time kept (up to ``KEEP_TIMES_MAX``: here, or not, all let go too, and the listener no
    longer knows these ids); the later bulk wait reads them with an MGET per chunk, never
    a SUBSCRIBE (ids it no longer knew were watched anew, a SUBSCRIBE each)."""
    r = redis.Redis.from_url(settings.result_backend)

    def bound(listener: ResultListener | AsyncResultListener) -> None:
        listener.KEEP_ARRIVED_MAX = 10
        if not times_kept:
            listener.KEEP_TIMES_MAX = 10

    def stored(jobs: list[Any]) -> bool:
        return int(r.exists(*[result_key(j.id) for j in jobs])) == len(jobs)

    bound(client.listener)
    jobs = client.submit_many("digits", fresh(models_dir, 200), variant="fp32", chunk_size=100)
    deadline = time.monotonic() + 60
    while not stored(jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # heard (and most of them evicted) by the listener
    assert len(client.listener._times) >= 150 if times_kept else len(client.listener._times) <= 10
    results = client.wait_all(jobs, timeout=60)
    assert all(not isinstance(r, Exception) for r in results)
    sync_ports = local_ports(client.backend.connection_pool)
    async_ports: set[int] = set()

    async def run() -> None:
        async with AsyncClient(settings) as c:
            bound(c.listener)
            ajobs = await c.submit_many("digits", fresh(models_dir, 200), variant="fp32", chunk_size=100)
            until = time.monotonic() + 60
            while not stored(ajobs) and time.monotonic() < until:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            out = await c.wait_all(ajobs, timeout=60)
            assert all(not isinstance(r, Exception) for r in out)
            async_ports.update(local_ports(c.backend.connection_pool))

    asyncio.run(run())
    monitor.close()
    assert not [c for c in monitor.sent if c.upper().startswith("SUBSCRIBE") and C.RESULT_KEY_PREFIX in c]
    # each client's own reads (the scripts read result keys too, and the worker its jobs'
    # for cancels: only the clients' connections count)
    for ports in (sync_ports, async_ports):
        assert [
            c for c in monitor.sent_by(ports) if c.upper().startswith("MGET") and C.RESULT_KEY_PREFIX in c
        ]
