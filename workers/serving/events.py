"""Task events for Flower, made per job and published a batch at a time.

Flower learns about jobs only from worker events. Since our fetcher, not Celery's
task machinery, runs the jobs, we send the same events Celery would
(``task-received``, ``task-started``, ``task-succeeded``, ``task-failed``), with the
fields Celery's ``EventDispatcher`` gives them (hostname, utcoffset, pid, clock,
timestamp, type), over its exchange and producer. They pile up here and go out as one
``task.multi`` message per flush: a JSON list of events, the form Celery's worker uses
for buffered events and Celery's ``EventReceiver._receive`` (hence Flower) reads.

A batch's jobs share every field but their id, so ``send_jobs`` encodes one event
(orjson) under one clock tick and splices each job's id into its bytes: per job that
is one join, where the dispatcher's own buffering cost a clock tick, a time zone lookup
and a kombu JSON encode each (a dict copy per job, encoded at the flush, cost 0.43 µs
per event against 0.31 spliced; 0.68 against 0.56 with the envelope, a probe of 256).
A publish through kombu costs about as much as a batch of 64 jobs' events themselves,
so under load ``flush(older_than_s)`` lets events gather for a few batches; the
completer flushes whatever is left once it has a moment with nothing to do.

The message goes out as kombu's Redis transport would send it (the same fanout topics,
through the channel's own client, the envelope its consumers read) but built here:
kombu base64-encodes the body and JSON-encodes the envelope in Python, 2.6-3.3 µs per
event, against 0.8 µs for this (``_publish_direct``; ``tests/integration/test_flower.py``
holds Flower to seeing every job). The body is the events' JSON as is, without a
``body_encoding``, which every kombu reads as it came. A transport without Redis's
fanout (none inferq supports today) falls back to kombu's own publish.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from celery import Celery
from celery.utils.time import utcoffset

log = logging.getLogger(__name__)

#: Events buffered that ``flush(older_than_s)`` publishes whatever their age: one
#: ``task.multi`` message stays a few hundred KiB.
FLUSH_AT = 2048
#: ``EventSink._fanout`` before the first flush looked it up.
_UNSET = object()
#: The routing key of a list of events (Celery's buffered form).
MULTI = "task.multi"
#: What ``send_jobs`` puts where an event's id goes, then splices each job's id into.
_ID_MARK = "@@inferq-event-uuid@@"
_ID_MARK_JSON = orjson.dumps(_ID_MARK)
#: Characters a JSON string must escape: an id holding any is encoded by orjson.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


class EventSink:
    """Thread-safe buffered task events; a failure to send is logged, never fatal."""

    def __init__(self, app: Celery, hostname: str, enabled: bool = True) -> None:
        self._lock = threading.Lock()
        self._dispatcher: Any = None
        #: Encoded events (JSON objects), sent as one JSON list per flush.
        self._buffer: list[bytes] = []
        self._oldest = 0.0  # monotonic time the oldest buffered event was added
        self._pid = os.getpid()
        self._hostname = hostname
        self._clock = app.clock
        #: The kombu Redis channel ``_publish_direct`` sends through (None: kombu's
        #: publish), looked up at the first flush: getting it connects.
        self._fanout: Any = _UNSET
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
                "uuid": _ID_MARK,
            }
            head, tail = orjson.dumps(base).split(_ID_MARK_JSON)
            ids = [jid for jid in job_ids if jid]
            if _NEEDS_ESCAPE.search("".join(ids)) is None:  # ids as JSON strings, as they are
                events = [b"".join((head, b'"', jid.encode(), b'"', tail)) for jid in ids]
            else:
                events = [b"".join((head, orjson.dumps(jid), tail)) for jid in ids]
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
                if self._fanout is _UNSET:
                    self._fanout = _redis_fanout(d.producer.channel)
                body = b"[" + b",".join(events) + b"]"
                if self._fanout is not None:
                    self._publish_direct(self._fanout, body)
                    return
                d.producer.publish(
                    body,
                    routing_key=MULTI,
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

    def _publish_direct(self, channel: Any, body: bytes) -> None:
        """Publish one message of events as kombu's Redis fanout does (``_put_fanout``),
        with the envelope of ``Channel.prepare_message`` and no body encoding."""
        d = self._dispatcher
        payload = orjson.dumps(
            {
                "body": body.decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": d.headers or {},
                "properties": {
                    "delivery_mode": d.delivery_mode,
                    "delivery_info": {"exchange": d.exchange.name, "routing_key": MULTI},
                    "priority": 0,
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )
        with channel.conn_or_acquire() as client:  # a client first: it settles the topics' prefix
            for topic in channel._get_publish_topics(d.exchange.name, MULTI):
                client.publish(topic, payload)

    def close(self) -> None:
        if self._dispatcher is not None:
            self.flush()
            with self._lock:
                self._dispatcher.close()
                self._dispatcher.connection.release()


def _redis_fanout(channel: Any) -> Any:
    """``channel`` where it is kombu's Redis channel (fanout over pub/sub topics); None
    for another transport (kombu publishes then)."""
    if hasattr(channel, "_get_publish_topics") and hasattr(channel, "conn_or_acquire"):
        return channel
    return None
