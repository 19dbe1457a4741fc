"""benchmarks/alternate.py: the run order and the pairwise comparison of two trees."""

from __future__ import annotations

import json

import pytest

from benchmarks.alternate import abba, compare, last_json, numbers


def test_runs_go_in_abba_order_so_a_steady_drift_favours_neither_tree() -> None:
    assert abba(3) == ["before", "after", "after", "before", "before", "after"]


def test_only_numbers_are_compared_and_booleans_are_not_numbers() -> None:
    assert numbers({"rate": 10, "cpu": 1.5, "ok": True, "name": "x", "raw": {"32": 1.0}}) == {
        "rate": 10.0,
        "cpu": 1.5,
    }


def test_the_last_json_object_is_read_past_anything_printed_before_it() -> None:
    out = "warming up\n" + json.dumps({"rate": 3, "raw": {"b": 1}}, indent=2) + "\n"
    assert last_json(out) == {"rate": 3, "raw": {"b": 1}}
    assert last_json(json.dumps({"rate": 4})) == {"rate": 4}


def test_output_without_json_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="--json"):
        last_json("rate: 3/s\n")


def test_each_pair_is_compared_whichever_tree_ran_first() -> None:
    runs = [
        ("before", {"cpu": 10.0}),
        ("after", {"cpu": 8.0}),  # after lower
        ("after", {"cpu": 12.0}),
        ("before", {"cpu": 11.0}),  # after higher
        ("before", {"cpu": 9.0}),  # an unfinished pair is not counted as a pair
    ]
    (row,) = compare(runs)
    assert row["before"] == [10.0, 11.0, 9.0] and row["after"] == [8.0, 12.0]
    assert row["after_lower"] == 1 and row["pairs"] == 2
    assert row["ratio"] == pytest.approx(10.0 / 10.0)
