"""A submitted job, and how a stored Celery meta document becomes a result or an error."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.errors import Expired, InferqError, error_from_wire, is_cacheable
from tasks.schema import JobStatus, Result

if TYPE_CHECKING:
    from producers.client import Client


def result_from_meta(job: str, meta: Mapping[str, Any], *, cached: bool) -> Result:
    """A stored Celery meta document as a ``Result``, or the error it records, raised."""
    status = meta.get("status")
    if status == "SUCCESS":
        return Result.from_wire(job, meta["result"], cached=cached)
    if status == "REVOKED":
        raise Expired(f"job {job} expired before it ran")
    if status == "FAILURE":
        exc = meta.get("result") or {}
        raise error_from_wire(str(exc.get("exc_type", "InferqError")), exc.get("exc_message", ""))
    raise InferqError(f"job {job} is not finished (state {status})")


def usable_from_cache(meta: Mapping[str, Any]) -> bool:
    """A stored state that may be served as a cache hit: a result, or a bad-input failure."""
    if meta.get("status") == "SUCCESS":
        return True
    if meta.get("status") == "FAILURE":
        exc = meta.get("result") or {}
        return is_cacheable(str(exc.get("exc_type")))
    return False


@dataclass
class Job:
    """A submitted job. ``wait`` returns its ``Result`` or raises the job's error."""

    id: str
    client: Client
    model: str
    variant: str
    enqueued_at: float
    cached: bool = False
    enqueued: bool = True
    _meta: dict[str, Any] | None = field(default=None, repr=False)
    _result: Result | None = field(default=None, repr=False)
    _arrived: float | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self._meta is not None

    def wait(self, timeout: float | None = None) -> Result:
        if self._meta is None:
            meta, arrived = self.client.listener.wait([self.id], timeout)[self.id]
            self._settle(meta, arrived)
        return self._finish()

    def _settle(self, meta: dict[str, Any], arrived: float) -> None:
        self._meta = meta
        self._arrived = arrived

    def _finish(self) -> Result:
        """The result, or the job's error raised; end-to-end stamped on first read."""
        if self._result is None:
            assert self._meta is not None
            self._result = result_from_meta(self.id, self._meta, cached=self.cached)
            arrived = self._arrived or time.time()
            self._result.timing.end_to_end_ms = (arrived - self.enqueued_at) * 1e3
        return self._result

    def status(self) -> JobStatus:
        return self.client.status(self.id)
