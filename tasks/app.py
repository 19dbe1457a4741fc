"""The Celery app factory both sides build from the same settings."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.control import Control

from tasks.connections import (
    CONNECT_TIMEOUT_S,
    HEALTH_CHECK_S,
    SOCKET_TIMEOUT_S,
    connection_options,
    tls_options,
    uses_tls,
)
from tasks.kombu_layout import PRIORITY_SEP, PRIORITY_STEPS
from tasks.settings import Settings

#: The codec of remote-control requests and replies (inspect, ping, Flower's worker pages).
CONTROL_SERIALIZER = "json"


class JsonControl(Control):  # type: ignore[misc]
    """Celery's remote control, speaking JSON whatever the task serializer is.

    Celery's mailbox encodes control requests and replies with ``task_serializer``
    (msgpack here), and msgpack refuses integer map keys on decode (``strict_map_key``).
    A worker's ``stats`` reply carries some: the broker's transport options echo
    ``socket_keepalive_options``, keyed by ``socket.TCP_KEEP*`` ints, so ``inspect stats``
    and Flower's worker page failed. JSON, Celery's own default for control, writes such
    keys as strings. Requests are still accepted in either codec (``accept_content``:
    msgpack and JSON, never pickle); job messages keep msgpack.
    """

    def __init__(self, app: Any = None) -> None:
        super().__init__(app)
        self.mailbox.serializer = CONTROL_SERIALIZER


def create_app(settings: Settings, *, name: str = "inferq") -> Celery:
    """A Celery app configured for inferq.

    Choices that matter:
    - msgpack for job messages (arrays travel as raw bytes), JSON for results (so a
      plain Celery client with default settings can read them); pickle is never
      accepted, in either direction.
    - ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged only after
      its result is stored, so a killed worker's jobs go back to the queue.
    - the result backend's TTL is the cache TTL: a result *is* the cache entry.
    - task events on, so Flower sees every job.
    - remote control in JSON (``JsonControl``), so every reply decodes.
    - kombu's priority lists named explicitly from ``tasks/kombu_layout.py``: kombu, our
      fetcher and Flower's queue depths (which read these transport options) count the
      same lists.
    - ``rediss://`` URLs get the settings' TLS options (``tasks/connections.py``);
      without them kombu would not verify the broker's certificate.
    """
    app = Celery(name, broker=settings.broker_url, backend=settings.result_backend, control=JsonControl)
    app.conf.update(
        task_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_serializer="json",
        result_accept_content=["json"],
        result_expires=settings.cache_ttl_s,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        # No task-sent events: they cost the producer a round trip per message, and a
        # bulk message is not a job; workers send received/started/succeeded per job.
        task_send_sent_event=False,
        worker_send_task_events=True,
        worker_prefetch_multiplier=settings.prefetch,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # The same timeouts as our own clients (tasks/connections.py): a broker that
        # vanishes from the network must not leave a connection waiting forever.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEP,
            **connection_options(),
        },
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        redis_backend_health_check_interval=HEALTH_CHECK_S,
        redis_socket_timeout=SOCKET_TIMEOUT_S,
        redis_socket_connect_timeout=CONNECT_TIMEOUT_S,
        redis_socket_keepalive=True,
        task_default_queue="inferq.default",
        worker_disable_rate_limits=True,
        enable_utc=True,
    )
    if uses_tls(settings.broker_url):
        app.conf.broker_use_ssl = tls_options(settings)
    if uses_tls(settings.result_backend):
        app.conf.redis_backend_use_ssl = tls_options(settings)
    return app
