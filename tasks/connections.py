"""Every Redis connection inferq opens, with the same timeouts on both sides.

A connection that waits forever is the failure mode that matters for a queue: when
the broker's host drops off the network without closing the TCP connection, a read
with no timeout blocks until the kernel gives up (many minutes), and the process
looks alive while serving nothing. So every client here has a connect timeout, a
read timeout longer than any blocking command we issue, TCP keepalive, and a health
check on connections that sat idle; a command that fails on a dead connection is
retried on a fresh one, and the callers that must not give up (the worker's fetcher
and completer, the client's result listener) retry with backoff on top of that.

A ``rediss://`` URL gets TLS options from the settings (``redis_ca_certs``,
``redis_certfile``, ``redis_keyfile``, ``redis_cert_reqs``), the same for our own
clients and for Celery's broker and result backend (``tasks/app.py``). Certificates
are verified unless ``redis_cert_reqs`` says ``none``: kombu alone would connect to a
``rediss://`` broker without checking anything.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tasks.errors import ConfigError
from tasks.settings import Settings

#: Seconds to wait for a TCP (and TLS) connection to Redis.
CONNECT_TIMEOUT_S = 5.0
#: Longest read we wait for: more than any blocking wait we do (a worker's doorbell, 0.5 s).
SOCKET_TIMEOUT_S = 15.0
#: A connection idle this long is PINGed before use, so a restarted Redis is noticed
#: before a command is lost on the old connection.
HEALTH_CHECK_S = 10
#: TCP keepalive: probe an idle connection after 15 s, every 5 s, give up after 3
#: unanswered probes (the kernel's default waits two hours before the first probe).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 15, 5, 3
#: redis-py retries a command this many times on a fresh connection (its default is 10
#: with backoff, which stretches one failing call past a minute). Enough for a pooled
#: connection that a Redis restart left stale; longer outages are the callers' to ride
#: out, with backoff they control (workers/broker/retry.py, producers/listener.py).
COMMAND_RETRIES = 2
#: Connections an ``AsyncClient`` opens to each Redis, at most (its pub/sub one aside).
ASYNC_POOL_SIZE = 32


def connection_options() -> dict[str, Any]:
    """Options for redis-py clients (kombu takes the same names as transport options)."""
    keepalive = {
        opt: value
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
            ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        )
        if (opt := getattr(socket, name, None)) is not None  # Linux names; macOS lacks some
    }
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive,
        "health_check_interval": HEALTH_CHECK_S,
    }


def uses_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def tls_options(settings: Settings) -> dict[str, Any]:
    """SSL options for a ``rediss://`` connection, in the names redis-py and kombu share.

    Celery takes this dict as ``broker_use_ssl`` and ``redis_backend_use_ssl``; files
    named by the settings must exist, so a typo fails here, not as a handshake error.
    """
    for name in ("redis_ca_certs", "redis_certfile", "redis_keyfile"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"setting {name} (INFERQ_{name.upper()}): no file {path}")
    verify = settings.redis_cert_reqs != "none"
    return {
        "ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
        "ssl_ca_certs": settings.redis_ca_certs or None,
        "ssl_certfile": settings.redis_certfile or None,
        "ssl_keyfile": settings.redis_keyfile or None,
    }


def _client_options(url: str, settings: Settings, socket_timeout: float | None) -> dict[str, Any]:
    options = connection_options()
    if socket_timeout is not None:
        options["socket_timeout"] = socket_timeout
        options["socket_connect_timeout"] = min(CONNECT_TIMEOUT_S, socket_timeout)
    if uses_tls(url):
        options.update(tls_options(settings))
    return options


def async_redis_client(
    url: str, settings: Settings, *, socket_timeout: float | None = None, retries: int = COMMAND_RETRIES
) -> redis.asyncio.Redis[bytes]:
    """``redis_client``'s asyncio twin (the ``AsyncClient``'s connections): the same
    timeouts, keepalive, health checks, retries and TLS.

    At most ``ASYNC_POOL_SIZE`` connections: a thousand coroutines calling at once queue
    for a connection (inside their call's bound) instead of opening a thousand sockets,
    or failing with redis-py's ``Too many connections``.
    """
    options = _client_options(url, settings, socket_timeout)
    options["retry"] = AsyncRetry(ExponentialBackoff(cap=0.5, base=0.05), retries)
    pool: redis.asyncio.BlockingConnectionPool[Any] = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=ASYNC_POOL_SIZE, timeout=None, **options
    )
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_pool(pool)  # type: ignore[attr-defined]  # owns the pool: closed with the client
    return client


def redis_client(
    url: str, settings: Settings, *, socket_timeout: float | None = None, retries: int = COMMAND_RETRIES
) -> redis.Redis[bytes]:
    """A redis-py client for ``url`` (the broker or the result backend) with inferq's timeouts,
    and TLS as the settings say when ``url`` is ``rediss://``.

    ``socket_timeout`` shortens the read timeout (and the connect timeout with it): the
    client library uses its call bound (``INFERQ_CLIENT_TIMEOUT_S``), so a thread stuck on
    a hung Redis is freed about when its caller has been answered.
    """
    options = _client_options(url, settings, socket_timeout)
    options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries)
    return redis.Redis.from_url(url, **options)
