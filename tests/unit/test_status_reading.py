"""``read_state`` tells a job's status from its record and claim; a job that finishes
while it is being read never reads as ``unknown``."""

from __future__ import annotations

import time

from producers.status import read_state, run_steps
from tasks.keys import inflight_key, result_key
from tasks.schema import JobStatus
from tasks.wire import Claim, StatusRecord

JOB = "a" * 32


class FinishingBackend:
    """A result backend whose job finishes right after the first call answers: the
    worker writes the record and deletes the claim (``store.lua``'s order)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {inflight_key(JOB): Claim.encode(time.time(), "digits:fp32")}
        self.calls = 0

    def _finish(self) -> None:
        self.calls += 1
        if self.calls == 1:
            record = StatusRecord.success(JOB, {"outputs": {}})
            self.keys[result_key(JOB)] = record.encode()
            self.keys.pop(inflight_key(JOB))

    def get(self, key: str) -> bytes | None:
        try:
            return self.keys.get(key)
        finally:
            self._finish()

    def mget(self, keys: list[str]) -> list[bytes | None]:
        try:
            return [self.keys.get(k) for k in keys]
        finally:
            self._finish()

    def time(self) -> tuple[int, int]:
        now = time.time()
        return int(now), int(now % 1 * 1e6)


def test_a_job_finishing_between_reads_is_queued_or_done_never_unknown() -> None:
    backend = FinishingBackend()
    # Read before it finished: still queued (never "unknown", which a reader of the
    # record first and the claim second would answer here).
    assert run_steps(read_state(JOB, 60), backend, broker=None)[1] is JobStatus.QUEUED
    record, status = run_steps(read_state(JOB, 60), backend, broker=None)
    assert status is JobStatus.SUCCESS and record is not None


def test_no_record_and_no_claim_is_unknown() -> None:
    backend = FinishingBackend()
    backend.keys.clear()
    backend.calls = 1
    assert run_steps(read_state(JOB, 60), backend, broker=None) == (None, JobStatus.UNKNOWN)
