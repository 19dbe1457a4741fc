"""Task events for Flower, made per job and published a batch at a time.

Flower learns about jobs only from worker events. Since our fetcher, not Celery's
task machinery, runs the jobs, we send the same events Celery would
(``task-received``, ``task-started``, ``task-succeeded``, ``task-failed``), with the
fields Celery's ``EventDispatcher`` gives them (hostname, utcoffset, pid, clock,
timestamp, type), over its exchange and producer. They pile up here and go out as one
``task.multi`` message per flush: a JSON list of events, the form Celery's worker uses
for buffered events and Celery's ``EventReceiver._receive`` (hence Flower) reads.

A batch's jobs share every field but their id, so ``send_jobs`` makes one event and
copies it per job, under one clock tick, and the list is encoded with orjson: per job
that is a dict copy, where the dispatcher's own buffering cost a clock tick, a time
zone lookup and a kombu JSON encode each. A publish through kombu costs about as
much as a batch of 64 jobs' events themselves, so under load ``flush(older_than_s)``
lets events gather for a few batches; the completer flushes whatever is left once it
has a moment with nothing to do.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
from celery import Celery
from celery.utils.time import utcoffset

log = logging.getLogger(__name__)

#: Events buffered that ``flush(older_than_s)`` publishes whatever their age: one
#: ``task.multi`` message stays a few hundred KiB.
FLUSH_AT = 2048


class EventSink:
    """Thread-safe buffered task events; a failure to send is logged, never fatal."""

    def __init__(self, app: Celery, hostname: str, enabled: bool = True) -> None:
        self._lock = threading.Lock()
        self._dispatcher: Any = None
        self._buffer: list[dict[str, Any]] = []
        self._oldest = 0.0  # monotonic time the oldest buffered event was added
        self._pid = os.getpid()
        self._hostname = hostname
        self._clock = app.clock
        if enabled:
            self._dispatcher = app.events.Dispatcher(
                app.connection_for_write(), hostname=hostname, enabled=True
            )

    def send(self, kind: str, job_id: str, **fields: Any) -> None:
        if job_id:
            self.send_jobs(kind, [job_id], **fields)

    def send_jobs(self, kind: str, job_ids: Iterable[str], **fields: Any) -> None:
        """One ``kind`` event per job, alike but for the job's id (``uuid``); ``timestamp``
        may be given (a job received earlier), else it is now."""
        if self._dispatcher is None:
            return
        try:
            base = {
                "hostname": self._hostname,
                "utcoffset": utcoffset(),
                "pid": self._pid,
                "clock": self._clock.forward(),
                "timestamp": time.time(),
                **fields,
                "type": kind,
            }
            events = [{**base, "uuid": jid} for jid in job_ids if jid]
        except Exception:
            log.debug("could not buffer %s events", kind, exc_info=True)
            return
        with self._lock:
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.extend(events)

    def flush(self, older_than_s: float = 0.0) -> None:
        """Publish the buffered events; with ``older_than_s``, only once the oldest has
        waited that long or ``FLUSH_AT`` events are buffered (else they wait for a later
        flush)."""
        if self._dispatcher is None:
            return
        with self._lock:
            events = self._buffer
            if not events:
                return
            if len(events) < FLUSH_AT and time.monotonic() - self._oldest < older_than_s:
                return
            self._buffer = []
            d = self._dispatcher
            try:
                d.producer.publish(
                    orjson.dumps(events),
                    routing_key="task.multi",
                    exchange=d.exchange.name,
                    declare=[d.exchange],
                    headers=d.headers,
                    delivery_mode=d.delivery_mode,
                    content_type="application/json",
                    content_encoding="utf-8",
                    retry=False,
                )
            except Exception as exc:
                log.warning("could not publish %d task events: %s", len(events), exc)

    def close(self) -> None:
        if self._dispatcher is not None:
            self.flush()
            with self._lock:
                self._dispatcher.close()
                self._dispatcher.connection.release()
