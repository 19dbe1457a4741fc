"""A submitted job: a handle to wait on, poll, and read the result of.

A ``Job`` knows its owner only through the small ``JobOwner`` protocol (wait for ids,
report a status), so this module does not import the client: ``Client`` implements
the protocol, and a test can hand in anything else that does. ``AsyncJob`` is the same
job for the ``AsyncClient`` (``AsyncJobOwner``): the state and how a result is read
from it are shared (``JobState``), only the waiting is awaited.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from producers.heard import Heard, HeardArrival, result_from, result_of
from producers.listener import Arrival
from tasks.errors import InferqError
from tasks.schema import CancelOutcome, JobStatus
from tasks.wire import Result

__all__ = ["AsyncJob", "AsyncJobOwner", "Job", "JobOwner", "JobState", "Settler", "result_of"]


class JobOwner(Protocol):
    """What a job needs from the client that submitted it."""

    def wait_for(
        self, job_ids: list[str], timeout: float | None, models: Iterable[str] = ()
    ) -> dict[str, Arrival]: ...

    def status(self, job_id: str) -> JobStatus: ...

    def cancel(self, job_id: str) -> CancelOutcome: ...

    def handle(self, job: Job) -> str: ...


class AsyncJobOwner(Protocol):
    """What an ``AsyncJob`` needs from the ``AsyncClient`` that submitted it."""

    async def wait_for(
        self, job_ids: list[str], timeout: float | None, models: Iterable[str] = ()
    ) -> dict[str, Arrival]: ...

    async def status(self, job_id: str) -> JobStatus: ...

    async def cancel(self, job_id: str) -> CancelOutcome: ...

    async def handle(self, job: AsyncJob) -> str: ...


@dataclass
class JobState:
    """A job's id and what is known of it; ``_finish`` reads its result once settled."""

    id: str
    model: str
    variant: str
    enqueued_at: float
    cached: bool = False
    enqueued: bool = True
    #: Its record once settled: parsed, or the bytes a reply batch brought (``heard.py``).
    _record: Heard | None = field(default=None, repr=False)
    _result: Result | None = field(default=None, repr=False)
    _arrived: float | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self._result is not None or self._record is not None

    @property
    def key(self) -> str:
        """``model:variant``."""
        return f"{self.model}:{self.variant}"

    def _settle(self, record: Heard, arrived: float) -> None:
        self._record = record
        self._arrived = arrived

    def _finish(self) -> Result:
        """The result, or the job's error raised; end-to-end stamped on first read (a
        cache hit's timing is its own: ``Timing.served_from_cache``).

        The record is let go once read into a ``Result``: a job of a bulk submission lives
        as long as its caller holds it, and its record was one more object per job for
        every full collection to walk (a ``Row`` kept its whole reply block alive, ids
        included). An error's record stays: it is raised again on every read."""
        if self._result is None:
            assert self._record is not None
            arrived = self._arrived or time.time()
            self._result = result_from(self._record, self.id, self.cached, self.enqueued_at, arrived)
            self._record = None
        return self._result

    def _outcome(self) -> Result | InferqError:
        """A settled job's result, or its error returned rather than raised (``wait_all``)."""
        try:
            return self._finish()
        except InferqError as exc:
            return exc


J = TypeVar("J", bound=JobState)


class Settler(Generic[J]):
    """Jobs awaited together, by id, each settled and read as its arrival comes
    (``Client.wait_all``, ``AsyncClient.wait_all``): results are built while the rest
    are still coming, not all after the last.

    One job per id in a dict, the rare id submitted twice in the same wait kept aside:
    a list per id was one more object per job for the garbage collector (``_finish``).
    """

    __slots__ = ("first", "more")

    def __init__(self, jobs: Iterable[J]) -> None:
        self.first: dict[str, J] = {}
        self.more: dict[str, list[J]] = {}
        for j in jobs:
            if j.id in self.first:
                self.more.setdefault(j.id, []).append(j)
            else:
                self.first[j.id] = j

    def settle(self, job_id: str, arrival: HeardArrival) -> None:
        """Settle every job of ``job_id`` and read its result (an error is kept, not raised)."""
        job = self.first[job_id]
        job._settle(*arrival)
        job._outcome()
        if self.more:
            for j in self.more.get(job_id, ()):
                j._settle(*arrival)
                j._outcome()


@dataclass
class Job(JobState):
    """A submitted job. ``wait`` returns its ``Result`` or raises the job's error."""

    owner: JobOwner = field(default=None, repr=False, kw_only=True)  # type: ignore[assignment]

    def wait(self, timeout: float | None = None) -> Result:
        if not self.done:
            record, arrived = self.owner.wait_for([self.id], timeout, (self.key,))[self.id]
            self._settle(record, arrived)
        return self._finish()

    def status(self) -> JobStatus:
        return self.owner.status(self.id)

    def cancel(self) -> CancelOutcome:
        """Cancel this job if no worker has started it (``Client.cancel``)."""
        return self.owner.cancel(self.id)

    def handle(self) -> str:
        """A new unguessable handle for this job (``Client.handle``)."""
        return self.owner.handle(self)


@dataclass
class AsyncJob(JobState):
    """A job submitted by the ``AsyncClient``: ``await job.wait()``."""

    owner: AsyncJobOwner = field(default=None, repr=False, kw_only=True)  # type: ignore[assignment]

    async def wait(self, timeout: float | None = None) -> Result:
        """The result, or the job's error raised; ``Timeout`` past ``timeout`` (None: the
        settings' ``wait_timeout_s``). Waiting never blocks the event loop."""
        if not self.done:
            record, arrived = (await self.owner.wait_for([self.id], timeout, (self.key,)))[self.id]
            self._settle(record, arrived)
        return self._finish()

    async def status(self) -> JobStatus:
        return await self.owner.status(self.id)

    async def cancel(self) -> CancelOutcome:
        """Cancel this job if no worker has started it (``AsyncClient.cancel``)."""
        return await self.owner.cancel(self.id)

    async def handle(self) -> str:
        """A new unguessable handle for this job (``AsyncClient.handle``)."""
        return await self.owner.handle(self)
