"""When a claim older than the visibility timeout may be taken over, and the lease setting."""

from __future__ import annotations

import pytest

from producers.claims import CLOCK_SLACK_S, nothing_could_run_it
from tasks.errors import ConfigError
from tasks.settings import Settings

NOW = 1_000_000.0  # the broker's clock
AGE = 100.0  # the claim was made 100 s ago: at NOW - 100 on the broker's clock
MARGIN = 0.05


@pytest.mark.parametrize(
    ("lengths", "newest", "age", "lost"),
    [
        ([0, 0, 0, 0], None, AGE, True),  # nothing queued or unacknowledged anywhere
        ([0, 0, 1, 0], None, AGE, False),  # a message waits in one priority list: might be it
        ([0, 0, 0, 0], NOW - 1, AGE, False),  # fetched (or renewed) after the claim: might be it
        ([0, 0, 0, 0], NOW - AGE - 0.01, AGE, False),  # within the margin: doubt
        ([0, 0, 0, 0], NOW - AGE - MARGIN - CLOCK_SLACK_S - 0.01, AGE, True),  # before the claim
        ([0, 0, 0, 0], NOW - 10 * AGE, -1, False),  # a claim of unknown age: any entry might be it
        ([0, 0, 0, 0], None, -1, True),
    ],
)
def test_a_stale_claim_is_lost_only_when_no_message_could_still_run_its_job(
    lengths: list[int], newest: float | None, age: float, lost: bool
) -> None:
    assert nothing_could_run_it(lengths, newest, NOW, age, MARGIN) is lost


def test_the_lease_has_a_default_and_a_floor() -> None:
    assert Settings.from_env({}).lease_s == 5
    assert Settings.from_env({"INFERQ_LEASE_S": "2.5"}).lease_s == 2.5
    for bad in ("0.5", "0", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="lease_s"):
            Settings.from_env({"INFERQ_LEASE_S": bad})
