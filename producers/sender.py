"""Sending job messages: the wire form, inputs beside big messages, one kombu producer per thread.

A kombu connection is not thread-safe, and Celery's shared pools drop their sockets
without closing them; so each of the client's call threads publishes through a
producer on a connection of its own, and ``close()`` closes every one. Publishing is
bounded like every client call: kombu's socket timeouts and publish retries are cut
to the client's bound, so a stuck publish is freed about when its caller is answered.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from kombu.connection import Connection
from kombu.messaging import Producer

from tasks import constants as C
from tasks.app import create_app
from tasks.keys import input_key, queue_name
from tasks.schema import ModelInfo
from tasks.settings import Settings
from tasks.wire import BulkItem, BulkMessage, Request


class Sender:
    """Builds and publishes job messages for one client."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        bound = settings.client_timeout_s
        self.app = app or create_app(settings)
        if app is None:
            self.app.conf.broker_transport_options = {
                **self.app.conf.broker_transport_options,
                "socket_timeout": bound,
                "socket_connect_timeout": min(5.0, bound),
            }
            self.app.conf.task_publish_retry_policy = {
                "max_retries": 1,
                "interval_start": 0,
                "interval_step": 0.1,
                "interval_max": 0.2,
            }
        self._local = threading.local()
        self._publishers: list[Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every publishing connection this sender opened."""
        with self._lock:
            publishers, self._publishers = self._publishers, []
        for conn in publishers:
            with contextlib.suppress(Exception):
                conn.close()  # type: ignore[no-untyped-call]

    def send(
        self,
        broker: redis.Redis[bytes],
        info: ModelInfo,
        items: list[tuple[str, bytes]],
        t0: float,
        *,
        cache: bool,
        deadline_at: float | None = None,
        priority: str = C.DEFAULT_PRIORITY,
    ) -> None:
        """One message: a single job under its own id, or a bulk message of many.

        Inputs over ``INLINE_INPUT_MAX_BYTES`` travel beside the message (claim check):
        a kombu message is JSON with a base64 body, which would make a 600 KB image
        cost 800 KB of base64 to encode, parse, copy into kombu's unacked index and
        decode again. The blob is stored in the broker's Redis first, then the message
        names it; the worker deletes it once the job's result is stored.
        """
        common = Request(
            model=info.name,
            variant=info.variant,
            version=info.version,
            enqueued_at=t0,
            cache=cache,
            deadline_at=deadline_at,
        )
        blobs: dict[str, bytes] = {}
        entries: list[BulkItem] = []
        # Inline inputs travel as base64 inside kombu's JSON: keep a bulk message well
        # under the workers' INFERQ_MAX_MESSAGE_BYTES, or they would answer it
        # PayloadTooLarge unread; past this budget inputs go beside the message.
        inline_left = self.settings.max_message_bytes // 2
        for jid, payload in items:
            if len(payload) > min(C.INLINE_INPUT_MAX_BYTES, inline_left):
                ref = input_key(jid, uuid.uuid4().hex[:8])
                blobs[ref] = payload
                entries.append(BulkItem(jid, inputs_ref=ref))
            else:
                entries.append(BulkItem(jid, inputs=payload))
                inline_left -= len(payload)
        if blobs:
            pipe = broker.pipeline(transaction=False)
            for ref, payload in blobs.items():
                pipe.set(ref, payload, ex=self.settings.cache_ttl_s)
            pipe.execute()
        body: dict[str, Any]
        if len(entries) == 1:
            task_id = entries[0].id
            common.inputs, common.inputs_ref = entries[0].inputs, entries[0].inputs_ref
            body = common.to_wire()
        else:
            body = BulkMessage(common, entries).to_wire()
            task_id = "bulk-" + uuid.uuid4().hex
        # argsrepr: Celery logs and shows a task's args; never the input payload.
        self.app.send_task(
            C.PREDICT_TASK,
            producer=self._producer(),
            args=[body],
            task_id=task_id,
            queue=queue_name(info.name, info.variant),
            priority=C.PRIORITIES[priority],
            # Celery's own deadline header too, so Celery tools see it (workers read either).
            expires=None if deadline_at is None else datetime.fromtimestamp(deadline_at, UTC),
            argsrepr=f"({info.key!r}, {len(entries)} input(s))",
            # The client reads results through its own listener: no Celery result
            # consumer, so no SUBSCRIBE + UNSUBSCRIBE per message (nor a backend per thread).
            ignore_result=True,
            kwargsrepr="{}",
        )

    def _producer(self) -> Producer:
        """This thread's kombu producer (one per call thread and process)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            conn = self.app.connection_for_write()
            with self._lock:
                self._publishers.append(conn)
            local.producer = Producer(conn, auto_declare=False)  # type: ignore[no-untyped-call]
            local.pid = os.getpid()
        producer: Producer = local.producer
        return producer
