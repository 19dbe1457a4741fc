"""Bulk tensor messages through a real worker: one result per input under its own id,
a bad row failing alone, the cache per input, per-job timing kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.errors import BadInput

pytestmark = pytest.mark.integration


def inputs(models_dir: Path, n: int, salt: float) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")[:n]
    return (x + np.float32(salt)).astype(np.float32)


def test_a_bulk_submission_gives_each_input_its_own_result_and_cache_entry(
    digits_worker, client: Client, models_dir: Path
) -> None:
    xs = inputs(models_dir, 300, np.random.default_rng().uniform(0, 1e-3))
    jobs = client.submit_many("digits", xs, variant="fp32", chunk_size=256)
    results = client.wait_all(jobs, timeout=60)
    assert not [r for r in results if isinstance(r, Exception)]
    singles = [client.submit("digits", x, variant="fp32", no_cache=True).wait(timeout=30) for x in xs[:3]]
    for r, s in zip(results[:3], singles, strict=True):
        np.testing.assert_allclose(r.outputs["probs"], s.outputs["probs"], rtol=1e-5)  # type: ignore[union-attr]
    t = results[0].timing  # type: ignore[union-attr]
    assert t.batch_size >= 1 and t.compute_ms > 0 and t.queue_ms >= 0 and t.end_to_end_ms is not None
    again = client.submit("digits", xs[123], variant="fp32")
    assert again.cached and again.id == jobs[123].id
    np.testing.assert_array_equal(again.wait(timeout=10).outputs["probs"], results[123].outputs["probs"])  # type: ignore[union-attr]


def test_a_bad_row_in_a_bulk_message_fails_alone_on_the_worker(
    digits_worker, client: Client, models_dir: Path
) -> None:
    xs = inputs(models_dir, 40, np.random.default_rng().uniform(0, 1e-3))
    xs[17, 3, 3, 0] = np.nan
    jobs = client.submit_many("digits", xs, variant="fp32", chunk_size=64, validate=False)
    results = client.wait_all(jobs, timeout=60)
    bad = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert bad == [17]
    assert isinstance(results[17], BadInput)
    assert "input 'image': expected finite values, got 1 NaN and 0 inf" in str(results[17])
