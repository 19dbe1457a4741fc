"""A bulk submission's results that arrive before anyone waits are kept as they came
(``producers/heard.py``) and handed to ``wait_all`` from memory: no read of their keys
again, no subscription. Holding a result cost a parsed record (and a ``threading.Event``)
each, so only 1,024 were kept, and 30,000 results read back from Redis cost the client
a third of its CPU per input. The bound is now in bytes too: past it, the oldest are
read again as before. Both clients, a real worker and a private redis-server; what
Redis saw is read with ``MONITOR``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from producers.async_client import AsyncClient
from producers.client import Client
from tasks import constants as C
from tasks.settings import Settings
from tasks.wire import Result
from tests.conftest import WorkerProcess
from tests.integration.test_reply_channel import Monitor, fresh, local_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: Past the 1,024 results the listeners used to keep.
N, CHUNK = 1500, 250


@pytest.fixture()
def seen(settings: Settings) -> Iterator[Monitor]:
    """Every command Redis runs while the test runs."""
    m = Monitor(settings.result_backend)
    yield m
    if not m._stop.is_set():
        m.close()


def reads_of_results(commands: list[str]) -> list[str]:
    """Reads of result keys among ``commands`` (give it the client's: ``Monitor.sent_by``;
    the scripts read them too, and the worker reads its jobs' keys for cancels)."""
    return [c for c in commands if c.upper().startswith("MGET") and C.RESULT_KEY_PREFIX in c]


def subscribes_to_results(commands: list[str]) -> list[str]:
    return [c for c in commands if c.upper().startswith("SUBSCRIBE") and C.RESULT_KEY_PREFIX in c]


def check_results(xs: np.ndarray, results: list[Result | Exception], jobs: list[object]) -> None:
    assert [type(r).__name__ for r in results] == ["Result"] * len(xs)
    assert [r.job_id for r in results] == [j.id for j in jobs]  # type: ignore[union-attr, attr-defined]
    for r in results:
        assert r.outputs["probs"].shape == (10,) and not r.cached  # type: ignore[union-attr]
        assert r.timing.end_to_end_ms is not None and r.timing.end_to_end_ms > 0  # type: ignore[union-attr]


def test_bulk_results_heard_before_the_wait_are_kept_not_read_again_sync(
    digits_worker: WorkerProcess, client: Client, seen: Monitor, models_dir: Path
) -> None:
    xs = fresh(models_dir, N)
    jobs = client.submit_many("digits", xs, variant="fp32", chunk_size=CHUNK)
    deadline = time.monotonic() + 60
    while len(client.listener._arrived) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(client.listener._arrived) == N, "every result heard before the wait"
    results = client.wait_all(jobs, timeout=60)
    mine = local_ports(client.backend.connection_pool)
    seen.close()
    check_results(xs, results, jobs)  # type: ignore[arg-type]
    assert not reads_of_results(seen.sent_by(mine)) and not subscribes_to_results(seen.sent)
    assert reads_of_results(seen.sent), "the worker's check for cancels reads them: seen"
    assert any(c.upper().startswith("EVALSHA") for c in seen.sent_by(mine)), "the client's claims: its ports"
    assert not client.listener._arrived and not client.listener._events, "taken by the wait: nothing left"
    assert client.listener._arrived.nbytes == 0


def test_bulk_results_heard_before_the_wait_are_kept_not_read_again_async(
    digits_worker: WorkerProcess, settings: Settings, seen: Monitor, models_dir: Path
) -> None:
    xs = fresh(models_dir, N)

    async def run() -> None:
        async with AsyncClient(settings) as c:
            jobs = await c.submit_many("digits", xs, variant="fp32", chunk_size=CHUNK)
            deadline = time.monotonic() + 60
            while len(c.listener._done_order) < N and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(c.listener._done_order) == N, "every result heard before the wait"
            results = await c.wait_all(jobs, timeout=60)
            check_results(xs, results, jobs)  # type: ignore[arg-type]
            # As the sync listener: what a wait read is forgotten (it held them until
            # evicted, and a bulk wait's filled the bound with what it could not evict).
            assert not c.listener._futures and not c.listener._done_order
            assert c.listener._done_bytes == 0
            mine.update(local_ports(c.backend.connection_pool))

    mine: set[int] = set()
    asyncio.run(run())
    seen.close()
    assert mine and not reads_of_results(seen.sent_by(mine)) and not subscribes_to_results(seen.sent)


def test_bulk_results_past_the_byte_bound_are_read_again_sync(
    digits_worker: WorkerProcess, client: Client, seen: Monitor, models_dir: Path
) -> None:
    """A digits result is ~500 bytes: a 20 KB bound keeps about 40 of 400."""
    client.listener.KEEP_ARRIVED_BYTES = 20_000
    xs = fresh(models_dir, 400)
    jobs = client.submit_many("digits", xs, variant="fp32", chunk_size=100)
    deadline = time.monotonic() + 60
    while len(client.listener._times) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.listener._arrived.nbytes <= 20_000
    results = client.wait_all(jobs, timeout=60)
    mine = local_ports(client.backend.connection_pool)
    seen.close()
    check_results(xs, results, jobs)  # type: ignore[arg-type]
    assert reads_of_results(seen.sent_by(mine)) and not subscribes_to_results(seen.sent)


def test_bulk_results_past_the_byte_bound_are_read_again_async(
    digits_worker: WorkerProcess, settings: Settings, seen: Monitor, models_dir: Path
) -> None:
    xs = fresh(models_dir, 400)

    async def run() -> None:
        async with AsyncClient(settings) as c:
            c.listener.KEEP_ARRIVED_BYTES = 20_000
            jobs = await c.submit_many("digits", xs, variant="fp32", chunk_size=100)
            deadline = time.monotonic() + 60
            while len(c.listener._times) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert c.listener._done_bytes <= 20_000
            results = await c.wait_all(jobs, timeout=60)
            check_results(xs, results, jobs)  # type: ignore[arg-type]
            mine.update(local_ports(c.backend.connection_pool))

    mine: set[int] = set()
    asyncio.run(run())
    seen.close()
    assert reads_of_results(seen.sent_by(mine)) and not subscribes_to_results(seen.sent)
