"""Reply batches through a real worker: a client whose channel reads columns (version 2)
hears a bulk submission's successes as columns, a client from before version 2 (its
channel without the mark) hears version 1, and both get the results stored under each
job's own key, sync and asyncio alike."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

import producers.listener
from producers import AsyncClient
from producers.client import Client
from tasks.constants import REPLY_CHANNEL_PREFIX
from tasks.keys import result_key
from tasks.settings import Settings
from tasks.wire import ReplyBatch, Result, StatusRecord

pytestmark = pytest.mark.integration


def fresh(models_dir: Path, n: int) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[:n]
    return (x + np.float32(np.random.default_rng().uniform(0, 1e-3))).astype(np.float32)


class Heard:
    """Every message published on one channel, from a connection of its own."""

    def __init__(self, url: str, channel: str) -> None:
        self.versions: list[int] = []
        self._r: redis.Redis[bytes] = redis.Redis.from_url(url)
        self._ps = self._r.pubsub()
        self._ps.subscribe(channel)
        self._ps.get_message(timeout=5)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self._ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if m is not None and m["type"] == "message":
                self.versions.append(ReplyBatch.decode(m["data"]).version)

    def close(self) -> None:
        time.sleep(0.5)  # the client may have heard the last batch before this connection read it
        self._stop.set()
        self._t.join(5)
        self._ps.close()
        self._r.close()


def same_as_stored(settings: Settings, results: list[Result | BaseException]) -> None:
    r: redis.Redis[bytes] = redis.Redis.from_url(settings.result_backend)
    try:
        raws = r.mget([result_key(x.job_id) for x in results if isinstance(x, Result)])
    finally:
        r.close()
    assert len(raws) == len(results)
    for got, raw in zip(results, raws, strict=True):
        assert isinstance(got, Result)
        record = StatusRecord.parse(raw, got.job_id)
        assert record is not None
        want = record.to_result(cached=False)
        assert (got.model, got.variant, got.version) == (want.model, want.variant, want.version)
        assert got.timing.compute_ms == want.timing.compute_ms
        assert got.timing.batch_size == want.timing.batch_size and got.timing.end_to_end_ms is not None
        for k, arr in want.outputs.items():
            assert got.outputs[k].dtype == arr.dtype
            np.testing.assert_array_equal(got.outputs[k], arr)


@pytest.fixture()
def old_channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clients made meanwhile name their reply channel as before version 2."""
    monkeypatch.setattr(producers.listener, "new_reply_channel", lambda: REPLY_CHANNEL_PREFIX + "ab" * 16)
    yield


def submit_and_watch(settings: Settings, client: Client, xs: np.ndarray) -> tuple[list[int], list]:
    # The listener names its channel when its thread starts (``reply_channel``): start it.
    client.wait_all(client.submit_many("digits", xs[:1], variant="fp32"), timeout=60)
    heard = Heard(settings.result_backend, client.listener.reply_channel)
    try:
        results = client.wait_all(
            client.submit_many("digits", xs[1:], variant="fp32", chunk_size=64), timeout=60
        )
    finally:
        heard.close()
    return heard.versions, results


def test_a_bulk_submission_is_answered_in_columns_that_read_as_the_stored_results(
    digits_worker, settings: Settings, models_dir: Path
) -> None:
    with Client(settings) as client:
        versions, results = submit_and_watch(settings, client, fresh(models_dir, 200))
    assert versions and set(versions) == {2}
    same_as_stored(settings, results)


def test_a_client_from_before_columns_is_answered_in_version_1_by_the_same_worker(
    digits_worker, settings: Settings, models_dir: Path, old_channels: None
) -> None:
    with Client(settings) as client:
        assert not client.listener.reply_channel.startswith(REPLY_CHANNEL_PREFIX + "c2.")
        versions, results = submit_and_watch(settings, client, fresh(models_dir, 200))
    assert versions and set(versions) == {1}
    same_as_stored(settings, results)


def test_lone_jobs_are_answered_by_their_records_even_on_a_channel_that_reads_columns(
    digits_worker, settings: Settings, models_dir: Path
) -> None:
    """A block of one row costs its reader more as columns than as its record."""
    xs = fresh(models_dir, 6)
    with Client(settings) as client:
        client.submit("digits", xs[0], variant="fp32").wait(timeout=60)  # the listener's channel named
        heard = Heard(settings.result_backend, client.listener.reply_channel)
        try:
            results = [client.submit("digits", x, variant="fp32").wait(timeout=60) for x in xs[1:]]
        finally:
            heard.close()
    assert heard.versions and set(heard.versions) == {1}
    same_as_stored(settings, list(results))


def test_the_asyncio_client_reads_columns_too(digits_worker, settings: Settings, models_dir: Path) -> None:
    xs = fresh(models_dir, 150)

    async def run() -> list[Result | BaseException]:
        async with AsyncClient(settings) as client:
            assert client.listener.reply_channel.startswith(REPLY_CHANNEL_PREFIX + "c2.")
            jobs = await client.submit_many("digits", xs, variant="fp32", chunk_size=64)
            return await client.wait_all(jobs, timeout=60)

    same_as_stored(settings, asyncio.run(run()))
