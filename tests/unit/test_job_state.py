"""A job's state once its record came (``producers/job.py``): read once, then let go."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from producers.job import Job, Settler
from tasks.errors import BadInput
from tasks.schema import Timing
from tasks.wire import Result, StatusRecord


def result_doc() -> dict[str, Any]:
    t = time.time()
    timing = Timing.build(
        enqueued_at=t, received_at=t, started_at=t, compute_done_at=t, finished_at=t, batch_size=1
    )
    return Result("j", "digits", "fp32", "1", {"probs": np.arange(3, dtype=np.float32)}, timing).to_wire()


class NoOwner:
    """An owner that fails the test if the job asks it anything: a settled job must not."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a settled job called its owner's {name}")


def job(jid: str = "j") -> Job:
    return Job(jid, "digits", "fp32", time.time(), owner=NoOwner())  # type: ignore[arg-type]


def test_a_read_result_lets_its_record_go_and_is_returned_again_without_asking() -> None:
    j = job()
    j._settle(StatusRecord.success("j", result_doc()).encode(), time.time())
    first = j.wait()
    assert j._record is None, "the record outlived the Result read from it"
    assert j.done and j.wait() is first and j._outcome() is first


def test_an_error_record_is_kept_and_raised_on_every_read() -> None:
    j = job()
    j._settle(StatusRecord.failure("j", BadInput("expected 784 floats, got 3")), time.time())
    for _ in range(2):
        with pytest.raises(BadInput, match="expected 784 floats"):
            j.wait()
    assert j.done and isinstance(j._outcome(), BadInput)


def test_a_settler_settles_every_job_of_an_id_submitted_twice() -> None:
    a, b, c = job("x"), job("x"), job("y")
    settler = Settler([a, b, c])
    assert list(settler.first) == ["x", "y"]
    settler.settle("x", (StatusRecord.success("x", result_doc()).encode(), time.time()))
    assert a.done and b.done and not c.done
    assert isinstance(a._outcome(), Result) and isinstance(b._outcome(), Result)
    assert a._outcome() is not b._outcome(), "each job its own Result"
