"""Task events for Flower, sent per job and published a batch at a time.

Flower learns about jobs only from worker events. Since our fetcher, not Celery's
task machinery, runs the jobs, we send the same events Celery would
(``task-received``, ``task-started``, ``task-succeeded``, ``task-failed``), through
Celery's own ``EventDispatcher`` in buffered mode: events pile up and go out as one
``task.multi`` message per flush (the format Celery's worker uses and Celery's
``EventReceiver``, hence Flower, reads), instead of one publish per event.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)


class EventSink:
    """Thread-safe buffered task events; a failure to send is logged, never fatal."""

    def __init__(self, app: Celery, hostname: str, enabled: bool = True) -> None:
        self._lock = threading.Lock()
        self._dispatcher: Any = None
        if enabled:
            self._dispatcher = app.events.Dispatcher(
                app.connection_for_write(),
                hostname=hostname,
                enabled=True,
                buffer_group=["task"],
                buffer_limit=1_000_000,  # we flush ourselves, once per batch
            )

    def send(self, kind: str, job_id: str, **fields: Any) -> None:
        if self._dispatcher is None or not job_id:
            return
        with self._lock:
            try:
                self._dispatcher.send(kind, uuid=job_id, **fields)
            except Exception:
                log.debug("could not buffer %s for %s", kind, job_id, exc_info=True)

    def flush(self) -> None:
        if self._dispatcher is None:
            return
        with self._lock:
            try:
                self._dispatcher.flush()
            except Exception as exc:
                log.warning("could not publish task events: %s", exc)

    def close(self) -> None:
        if self._dispatcher is not None:
            self.flush()
            with self._lock:
                self._dispatcher.close()
                self._dispatcher.connection.release()
