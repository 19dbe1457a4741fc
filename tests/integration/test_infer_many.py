"""``infer_many`` through a real worker: stacked outputs, row i input i's, the same job ids
and cache entries as ``submit_many``, failures by row, both clients."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from producers.async_client import AsyncClient
from producers.client import Client
from tasks.errors import BadInput, Timeout
from tasks.settings import Settings
from tests.conftest import on_db

pytestmark = pytest.mark.integration


def inputs(models_dir: Path, n: int) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[:n]
    return (x + np.float32(np.random.default_rng().uniform(0, 1e-3))).astype(np.float32)


def test_infer_many_stacks_each_input_s_outputs_in_its_row_with_its_own_job_and_cache_entry(
    digits_worker, client: Client, models_dir: Path
) -> None:
    xs = inputs(models_dir, 300)
    got = client.infer_many("digits", xs, variant="fp32", chunk_size=128, timeout=60)
    assert got.ok and len(got) == 300 and got.versions and not got.cached.any()
    assert got.outputs["probs"].shape == (300, 10) and got.outputs["probs"].dtype == np.float32
    for i in (0, 137, 299):  # each row is that input's own answer
        alone = client.submit("digits", xs[i], variant="fp32", no_cache=True).wait(timeout=30)
        np.testing.assert_allclose(got.outputs["probs"][i], alone.outputs["probs"], rtol=1e-5)
    t = got.timing
    assert (t["compute_ms"] > 0).all() and (t["queue_ms"] >= 0).all() and (t["batch_size"] >= 1).all()
    assert np.isfinite(t["end_to_end_ms"]).all() and (t["end_to_end_ms"] >= t["processing_ms"] * 0.5).all()
    # The ids and cache entries are submit_many's: the same input is a cache hit under the same id.
    again = client.submit("digits", xs[42], variant="fp32")
    assert again.cached and again.id == got.job_ids[42]
    np.testing.assert_array_equal(again.wait(timeout=10).outputs["probs"], got.outputs["probs"][42])


def test_infer_many_mixes_cache_hits_repeats_and_fresh_inputs_row_by_row(
    digits_worker, client: Client, models_dir: Path
) -> None:
    xs = inputs(models_dir, 120)
    xs[100] = xs[7]  # the same input twice in one call
    first = client.wait_all(client.submit_many("digits", xs[:50], variant="fp32"), timeout=60)
    answered: list[int] = []
    got = client.infer_many("digits", xs, variant="fp32", chunk_size=32, progress=answered.append, timeout=60)
    assert got.ok
    assert sum(answered) == 120 and answered[0] == 32  # every row once; the first chunk all hits
    assert got.cached[:50].all() and not got.cached[50:100].any()
    for i in (0, 7, 49):
        np.testing.assert_array_equal(got.outputs["probs"][i], first[i].outputs["probs"])  # type: ignore[union-attr]
    np.testing.assert_array_equal(got.outputs["probs"][100], got.outputs["probs"][7])
    assert got.job_ids[100] == got.job_ids[7]
    # A hit's timing is its own (no queue, no compute), as ``Timing.served_from_cache`` says.
    assert (got.timing["compute_ms"][:50] == 0).all() and (got.timing["compute_ms"][50:100] > 0).all()
    assert np.isfinite(got.timing["end_to_end_ms"]).all()


def test_a_failed_input_is_reported_by_its_row_and_the_others_still_come(
    digits_worker, client: Client, models_dir: Path
) -> None:
    xs = inputs(models_dir, 40)
    xs[17, 3, 3, 0] = np.nan
    got = client.infer_many("digits", xs, variant="fp32", validate=False, timeout=60)
    assert list(got.errors) == [17] and isinstance(got.errors[17], BadInput)
    assert not got.ok
    assert (got.outputs["probs"][17] == 0).all() and np.isnan(got.timing["compute_ms"][17])
    assert np.isfinite(np.delete(got.timing["compute_ms"], 17)).all()
    np.testing.assert_allclose(np.delete(got.outputs["probs"], 17, axis=0).sum(axis=1), 1.0, rtol=1e-4)
    with pytest.raises(BadInput, match=r"input 17 of 40 \(1 failed\): input 'image': expected finite values"):
        got.raise_for_errors()


def test_the_async_infer_many_gives_the_same_rows_as_the_sync_one(
    digits_worker, settings: Settings, client: Client, models_dir: Path
) -> None:
    xs = inputs(models_dir, 200)

    async def main() -> tuple[np.ndarray, np.ndarray, list[str]]:
        async with AsyncClient(settings) as ac:
            answered: list[int] = []
            got = await ac.infer_many(
                "digits", xs, variant="fp32", chunk_size=64, progress=answered.append, timeout=60
            )
            assert got.ok and not got.cached.any() and sum(answered) == 200
            assert np.isfinite(got.timing["end_to_end_ms"]).all()
            return got.outputs["probs"], got.cached, got.job_ids

    probs, _, ids = asyncio.run(main())
    again = client.infer_many("digits", xs, variant="fp32", timeout=60)
    assert again.cached.all() and again.job_ids == ids
    np.testing.assert_array_equal(again.outputs["probs"], probs)


def test_infer_many_is_bounded_by_its_timeout_and_names_a_model_no_worker_serves(
    digits_worker, settings: Settings, models_dir: Path
) -> None:
    own = on_db(settings, 6)  # its fp16 jobs are never run: kept out of the other tests' queues
    xs = inputs(models_dir, 20)
    with Client(own) as c:
        t0 = time.monotonic()
        with pytest.raises(Timeout, match="no live worker serves digits:fp16"):
            c.infer_many("digits", xs, variant="fp16", timeout=2.0)
        assert time.monotonic() - t0 < 6.0

    async def main() -> None:
        async with AsyncClient(own) as ac:
            with pytest.raises(Timeout, match="no live worker serves digits:fp16"):
                await ac.infer_many("digits", xs + 1, variant="fp16", timeout=2.0)

    t0 = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t0 < 6.0


def test_big_inputs_go_fewer_per_message_and_every_row_still_comes(
    digits_worker, settings: Settings, client: Client, models_dir: Path
) -> None:
    """A client whose messages may hold 32 KB (16 KB of inputs) sends digits inputs
    (3,136 bytes each) five per chunk whatever ``chunk_size`` says, through a real
    worker, and every row comes back as the default client computes it."""
    xs = inputs(models_dir, 23)
    sent: list[int] = []
    with Client(settings.with_(max_message_bytes=32 * 1024)) as small:
        jobs = small.submit_many("digits", xs, variant="fp32", chunk_size=64, progress=sent.append)
        results = small.wait_all(jobs, timeout=60)
        got = small.infer_many("digits", xs, variant="fp32", chunk_size=64, timeout=60)
    assert sent == [5, 5, 5, 5, 3]
    assert got.ok and got.cached.all()  # the submit_many's results, found by the same ids
    wanted = client.infer_many("digits", xs, variant="fp32", timeout=60)
    np.testing.assert_array_equal(got.outputs["probs"], wanted.outputs["probs"])
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.outputs["probs"], wanted.outputs["probs"][i], rtol=1e-5)  # type: ignore[union-attr]
