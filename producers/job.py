"""A submitted job: a handle to wait on, poll, and read the result of.

A ``Job`` knows its owner only through the small ``JobOwner`` protocol (wait for ids,
report a status), so this module does not import the client: ``Client`` implements
the protocol, and a test can hand in anything else that does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from producers.listener import Arrival
from tasks.schema import CancelOutcome, JobStatus
from tasks.wire import Result, StatusRecord


class JobOwner(Protocol):
    """What a job needs from the client that submitted it."""

    def wait_for(self, job_ids: list[str], timeout: float | None) -> dict[str, Arrival]: ...

    def status(self, job_id: str) -> JobStatus: ...

    def cancel(self, job_id: str) -> CancelOutcome: ...

    def handle(self, job: Job) -> str: ...


@dataclass
class Job:
    """A submitted job. ``wait`` returns its ``Result`` or raises the job's error."""

    id: str
    owner: JobOwner = field(repr=False)
    model: str
    variant: str
    enqueued_at: float
    cached: bool = False
    enqueued: bool = True
    _record: StatusRecord | None = field(default=None, repr=False)
    _result: Result | None = field(default=None, repr=False)
    _arrived: float | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self._record is not None

    def wait(self, timeout: float | None = None) -> Result:
        if self._record is None:
            record, arrived = self.owner.wait_for([self.id], timeout)[self.id]
            self._settle(record, arrived)
        return self._finish()

    def _settle(self, record: StatusRecord, arrived: float) -> None:
        self._record = record
        self._arrived = arrived

    def _finish(self) -> Result:
        """The result, or the job's error raised; end-to-end stamped on first read."""
        if self._result is None:
            assert self._record is not None
            self._result = self._record.to_result(cached=self.cached)
            arrived = self._arrived or time.time()
            self._result.timing.end_to_end_ms = (arrived - self.enqueued_at) * 1e3
        return self._result

    def status(self) -> JobStatus:
        return self.owner.status(self.id)

    def cancel(self) -> CancelOutcome:
        """Cancel this job if no worker has started it (``Client.cancel``)."""
        return self.owner.cancel(self.id)

    def handle(self) -> str:
        """A new unguessable handle for this job (``Client.handle``)."""
        return self.owner.handle(self)
