"""ops/stats.py: exact percentiles and the latency table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.stats import PERCENTILES, latency_table, summarize

NAMES = ["p50", "p90", "p95", "p99", "p99_9"]


def test_summary_keys_name_each_percentile():
    assert set(summarize([1.0, 2.0])) == {"n", "mean", "max", *NAMES}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_equal_numpy_percentile_on_random_data(seed):
    data = np.random.default_rng(seed).lognormal(mean=1.0, sigma=0.8, size=1009)
    s = summarize(data.tolist())
    want = np.percentile(data, PERCENTILES)
    for name, value in zip(NAMES, want, strict=True):
        assert s[name] == pytest.approx(value, rel=1e-12)
    assert s["n"] == 1009
    assert s["mean"] == pytest.approx(data.mean(), rel=1e-12)
    assert s["max"] == data.max()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_summary_matches_numpy_for_any_samples(samples):
    s = summarize(iter(samples))  # any iterable, even a one-shot generator
    arr = np.asarray(samples)
    assert s["n"] == len(samples)
    assert s["max"] == arr.max()
    assert s["p50"] == pytest.approx(np.percentile(arr, 50), rel=1e-9, abs=1e-9)
    assert s["p99_9"] == pytest.approx(np.percentile(arr, 99.9), rel=1e-9, abs=1e-9)
    assert min(samples) <= s["p50"] <= s["p90"] <= s["p99"] <= s["p99_9"] <= s["max"]


def test_small_sample_percentiles_interpolate_linearly():
    s = summarize([10.0, 20.0, 30.0, 40.0], percentiles=(0, 50, 100, 12.5))
    assert (s["p0"], s["p50"], s["p100"], s["p12_5"]) == (10.0, 25.0, 40.0, 13.75)
    assert s["mean"] == 25.0


def test_empty_input_gives_nan_everywhere_and_zero_count():
    s = summarize([])
    assert s["n"] == 0
    assert set(s) == {"n", "mean", "max", *NAMES}
    assert all(math.isnan(s[k]) for k in ("mean", "max", *NAMES))


def test_latency_table_renders_one_row_per_measure_with_two_decimals():
    rows = {
        "queue": {"mean": 1.234, "p50": 1.0, "p95": 3.5, "p99": 10.0},
        "processing": {"mean": 20.0, "p50": 19.999, "p95": 25.0},
    }
    lines = latency_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["ms", "mean", "p50", "p95", "p99"]
    assert set(lines[1]) == {"-"}
    assert len(lines[1]) == len(lines[0])
    assert lines[2].split() == ["queue", "1.23", "1.00", "3.50", "10.00"]
    assert lines[3].split() == ["processing", "20.00", "20.00", "25.00", "nan"]
    # Fixed width: every column ends at the same offset.
    assert len({len(line) for line in lines}) == 1


def test_latency_table_widens_for_long_row_names_and_takes_custom_columns():
    out = latency_table({"a-very-long-measure-name": {"max": 5.0}}, cols=("max",))
    head, _, row = out.splitlines()
    assert head.split() == ["ms", "max"]
    assert row.split() == ["a-very-long-measure-name", "5.00"]
    assert len(head) == len(row)
