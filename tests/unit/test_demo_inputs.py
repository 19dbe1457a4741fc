"""The demo's pass-1 inputs: new to the cache on every run, predictions unchanged."""

from __future__ import annotations

import numpy as np

from ops.demo.workload import FRESH_STEPS, fresh_inputs

X = np.random.default_rng(3).random((5, 28, 28, 1), dtype=np.float32)
X[:, :4] = 0.0  # background


def test_runs_draw_among_thousands_of_scales_so_two_runs_rarely_meet() -> None:
    runs = [fresh_inputs(X, seed) for seed in range(400)]
    distinct = {scaled.tobytes() for scaled, _ in runs}
    assert len(distinct) > 380, "inputs scaled among ~150 float32 factors met another run's once in 150"
    assert all(2**-24 * FRESH_STEPS[0] <= u < 2**-24 * FRESH_STEPS[1] for _, u in runs)


def test_a_scale_an_earlier_run_used_is_drawn_again() -> None:
    first, u1 = fresh_inputs(X, 7)
    seen: list[np.ndarray] = []

    def used(scaled: np.ndarray) -> bool:
        seen.append(scaled)
        return np.array_equal(scaled, first)  # what the earlier run sent

    again, u2 = fresh_inputs(X, 7, used=used)
    assert len(seen) == 2 and u2 != u1 and not np.array_equal(again, first)


def test_scaled_inputs_stay_in_range_with_background_zero_and_every_row_new() -> None:
    scaled, _ = fresh_inputs(X, 1)
    assert scaled.dtype == X.dtype and scaled.min() >= 0.0 and scaled.max() <= 1.0
    assert (scaled[:, :4] == 0.0).all()
    assert all(not np.array_equal(a, b) for a, b in zip(scaled, X, strict=True))
