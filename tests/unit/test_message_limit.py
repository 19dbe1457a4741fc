"""``message_limit``: how many unacknowledged messages a worker holds, from its job
capacity and how many jobs a message held in its last fetch."""

from __future__ import annotations

import pytest

from workers.broker.fetcher import MIN_MESSAGES, message_limit


def test_single_job_messages_fill_the_capacity_one_job_each() -> None:
    assert message_limit(128, 1.0) == 128


def test_bulk_messages_are_held_a_few_at_a_time_however_big() -> None:
    assert message_limit(128, 256.0) == MIN_MESSAGES == 4
    assert message_limit(128, 10_000.0) == 4


@pytest.mark.parametrize(("per_message", "limit"), [(2.0, 64), (3.0, 43), (20.0, 7), (50.0, 4)])
def test_mixed_sizes_hold_about_capacity_jobs(per_message: float, limit: int) -> None:
    assert message_limit(128, per_message) == limit


def test_before_any_fetch_a_worker_takes_a_few_messages_then_learns() -> None:
    assert message_limit(128, None) == 4


def test_a_capacity_under_the_least_is_kept() -> None:
    assert message_limit(1, None) == 1
    assert message_limit(3, 500.0) == 3


def test_a_message_with_no_jobs_counts_as_one() -> None:
    assert message_limit(8, 0.0) == 8
