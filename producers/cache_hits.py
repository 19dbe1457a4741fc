"""The jobs a client was answered from the cache for, so ``result(id)`` tells the same story.

``cached`` on a ``Result`` means *served from the cache for this caller's request*: the
submit found the input's result stored, and no worker computed it for that submission.
A job id is a content hash that every submitter of the input shares, so the stored
record cannot say whose request it was computed for; only the client that submitted
knows. It remembers its recent hits (when each was asked and answered), and
``result(id)`` of such a job answers ``cached=True`` with the same timing ``wait()``
gave. Any other job read by id, including one computed for this client or for
another process, is the job's own result: ``cached=False``, with the computing job's
timing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from producers.job import result_of
from producers.ownership import HandleRef
from producers.plans import JobSpec
from tasks.wire import Result, StatusRecord

#: Hits remembered per client: enough for a burst of polls after a bulk submit, small
#: enough (about 100 bytes each) to cost nothing in a long-lived web backend.
REMEMBERED = 4096


class RecentHits:
    """A bounded, thread-safe memory of ``job id -> (asked_at, answered_at)`` of cache hits."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._hits: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, job_id: str, asked_at: float, answered_at: float) -> None:
        with self._lock:
            self._hits[job_id] = (asked_at, answered_at)
            self._hits.move_to_end(job_id)
            while len(self._hits) > self.size:
                self._hits.popitem(last=False)

    def remember_hits(self, specs: Iterable[JobSpec], asked_at: float) -> None:
        """Remember the cache hits among a submitted chunk's jobs."""
        for spec in specs:
            if spec.cached:
                self.remember(spec.id, asked_at, spec.arrived or asked_at)

    def forget(self, job_ids: Iterable[str]) -> None:
        """These jobs are sent to be computed again: no longer hits."""
        with self._lock:
            for jid in job_ids:
                self._hits.pop(jid, None)

    def result_for(self, ref: HandleRef, record: StatusRecord) -> Result:
        """What ``result()`` answers for a job named by ``ref``: by a handle, what the handle
        records (a hit of the submission it was made for, or the job's own result, never
        another caller's hit this process remembers); by id, ``result(record)``."""
        if not ref.is_handle:
            return self.result(record)
        if ref.hit is None:
            return record.to_result(cached=False)
        return result_of(record, True, *ref.hit)

    def result(self, record: StatusRecord) -> Result:
        """What ``result(id)`` answers for a ready record (or the job's error, raised)."""
        with self._lock:
            hit = self._hits.get(record.job_id)
        if hit is None:
            return record.to_result(cached=False)
        return result_of(record, True, *hit)
