"""Write job states to the result backend in Celery's own format, a batch at a time.

The documents are exactly what Celery's Redis backend would write (``status``,
``result``, ``traceback``, ``children``, ``date_done``, ``task_id``), so any Celery
client can poll them with ``AsyncResult``; but a whole batch goes out in one pipeline
(one round trip) instead of one ``SETEX`` + ``PUBLISH`` per job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from tasks.errors import InferqError
from tasks.keys import result_key


@dataclass(frozen=True)
class Outcome:
    """One job's end: a result document or an error."""

    job_id: str
    result: dict[str, Any] | None = None
    error: InferqError | None = None
    key: str = "unknown"  # model:variant, for metrics

    @property
    def state(self) -> str:
        return "SUCCESS" if self.error is None else "FAILURE"


def meta_document(job_id: str, state: str, result: Any) -> bytes:
    done = datetime.now(UTC).isoformat() if state in ("SUCCESS", "FAILURE") else None
    doc = {
        "status": state,
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": done,
        "task_id": job_id,
    }
    return orjson.dumps(doc)


def error_document(exc: InferqError) -> dict[str, Any]:
    """How Celery's JSON backends record an exception (never pickled)."""
    return {"exc_type": type(exc).__name__, "exc_message": [exc.message], "exc_module": "tasks.errors"}


# One command per batch instead of one (or two) per job: KEYS are result keys,
# ARGV[1] the TTL, ARGV[2..] the documents. Publishing lets waiting clients see a
# result within a round trip (Celery's Redis backend publishes the same way).
_STORE = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  redis.call('PUBLISH', KEYS[i], ARGV[i + 1])
end
return #KEYS
"""
# STARTED is not published: only ready states wake waiters.
_STARTED = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


class ResultWriter:
    """Stores outcomes (and ``STARTED`` marks) with one round trip per call."""

    def __init__(self, client: redis.Redis[bytes], ttl_s: int, started_ttl_s: int | None = None) -> None:
        self.client = client
        self.ttl_s = ttl_s
        #: A ``STARTED`` state is not a result: if the job's message were lost, a state
        #: that lived as long as the cache would make every resubmission wait for it.
        self.started_ttl_s = min(ttl_s, started_ttl_s or ttl_s)
        self._store = client.register_script(_STORE)
        self._started = client.register_script(_STARTED)

    def started(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if ids:
            self._started(
                keys=[result_key(j) for j in ids],
                args=[self.started_ttl_s, *(meta_document(j, "STARTED", None) for j in ids)],
            )

    def store(self, outcomes: Iterable[Outcome]) -> None:
        outcomes = list(outcomes)
        if not outcomes:
            return
        docs = [
            meta_document(o.job_id, o.state, o.result if o.error is None else error_document(o.error))
            for o in outcomes
        ]
        self._store(keys=[result_key(o.job_id) for o in outcomes], args=[self.ttl_s, *docs])
