"""Reading ``check_and_claim.lua``'s compact answer: one code per job, extras in order."""

from __future__ import annotations

import pytest

from producers.claims import CLAIMED, FOUND, MAYBE_STALE, SHARED, read_check_reply
from tasks.errors import InferqError, TransientError


def test_codes_alone_answer_claimed_and_shared_in_order() -> None:
    assert read_check_reply([b"0202", []], 4) == [[CLAIMED], [SHARED], [CLAIMED], [SHARED]]


def test_records_and_stale_claims_are_taken_from_the_extras_in_order() -> None:
    reply = [b"130121", [b"rec-a", b"2:99.0:m:v", b"41.5", b"rec-b", b"rec-c"]]
    assert read_check_reply(reply, 6) == [
        [FOUND, b"rec-a"],
        [MAYBE_STALE, b"2:99.0:m:v", b"41.5"],
        [CLAIMED],
        [FOUND, b"rec-b"],
        [SHARED],
        [FOUND, b"rec-c"],
    ]


def test_an_answer_for_another_number_of_jobs_is_an_inferq_error_naming_both() -> None:
    with pytest.raises(TransientError, match="answered for 2 jobs, expected 3") as info:
        read_check_reply([b"00", []], 3)
    assert isinstance(info.value, InferqError)
