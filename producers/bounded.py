"""Client calls bounded in time, with one kind of error when Redis does not answer.

A web backend shares one ``Client`` between its request threads. If Redis hangs (a
stopped process, a partition that drops packets), a blocking Redis call waits for its
socket timeout, then redis-py and kombu retry: one ``submit`` was measured taking 136 s,
and a server's whole thread pool was stuck within seconds. So each public call carries
a deadline, and every wait inside it is cut to what is left of it: the wait for a free
connection (``BoundedPool``), the TCP (and TLS) connect and each read and write
(``DeadlineConnection``). The call runs on the caller's own thread: no hop to a pool of
client threads and back (two thread wake-ups per call, which cost more CPU than the
Redis command itself under 64 threads). Past the deadline the caller gets
``BrokerUnavailable``; a command not yet sent when the deadline passes is never sent.
Redis and kombu errors become ``BrokerUnavailable`` too (a refused password or ACL:
``ConfigError``), their cause chained, so a caller catches inferq's errors only.

What socket timeouts cannot cut short, a DNS lookup of the Redis host name, is the
resolver's to bound (its own timeout and attempts, ``/etc/resolv.conf``); use an
address or a name in ``/etc/hosts`` where that matters.

The connections per Redis are bounded (``CallBound.connections``): callers past that
queue for one, inside their own deadline. redis-py's pool is fork-safe: a client made
before a fork (gunicorn, Celery prefork) opens fresh connections in the child.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
from kombu.exceptions import KombuError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tasks.connections import CONNECT_TIMEOUT_S, connection_options, tls_options, uses_tls
from tasks.errors import BrokerUnavailable, ConfigError
from tasks.settings import Settings

T = TypeVar("T")

#: Errors of the moment from Redis and kombu (and the sockets under them).
IO_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, KombuError, OSError, socket.timeout)

#: Connections a ``Client`` opens to each Redis for its calls, at most (its result
#: listener's one aside). Sixteen answer thousands of calls a second; more threads queue.
CONNECTIONS = 16
#: The shortest socket timeout a call's last read gets: a reply already on its way is
#: still taken, and the read does not spin.
MIN_WAIT_S = 0.001
#: How long past its call's deadline a read may wait: a socket's timeout is changed only
#: when it would end the read before the deadline or more than this after it (a new one
#: is set half of it past), so most reads change nothing.
SLACK_S = 0.05

#: The deadline of the call running on this thread (monotonic time), if any.
_call = threading.local()


def _left() -> float | None:
    """Seconds left to this thread's call, or None outside a bounded call."""
    deadline: float | None = getattr(_call, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


def translate(exc: BaseException, what: str, where: str) -> BrokerUnavailable | ConfigError:
    """A Redis or kombu error as inferq's: ``ConfigError`` for a refused password or ACL
    (not the moment's fault: retrying cannot help), else ``BrokerUnavailable``."""
    if isinstance(exc, redis.RedisError) and _no_password(str(exc)):
        return ConfigError(
            f"{what}: Redis asks for a password and none was given ({where}); "
            "put it in the URL: redis://:PASSWORD@host:port/db"
        )
    if isinstance(
        exc,
        (redis.AuthenticationError, redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError),
    ):
        return ConfigError(f"{what}: Redis refused this client: {exc} ({where})")
    return BrokerUnavailable(f"{what}: {type(exc).__name__}: {exc} ({where})")


def _no_password(text: str) -> bool:
    """Redis's ways of saying a client connected without a password it asks for: redis-py's
    HELLO on connect (``HELLO must be called with the client already authenticated``), or
    any command (``NOAUTH Authentication required``)."""
    return text.startswith(("HELLO must be called", "NOAUTH", "Authentication required"))


def timed_out(what: str, left: float, where: str) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"{what}: Redis did not answer within {left:.3g} s ({where}); "
        "the call's bound is its timeout, or INFERQ_CLIENT_TIMEOUT_S"
    )


class DeadlineConnection(redis.Connection):
    """A redis-py connection whose every wait ends by the deadline of the call using it.

    Outside a bounded call (the result listener's thread) it behaves as redis-py's own.
    """

    def _connect(self) -> Any:
        left = _left()
        if left is None:
            return super()._connect()  # type: ignore[misc]  # redis-py's, missing from its stubs
        if left <= 0:
            raise redis.TimeoutError("no time left to connect within the call's bound")
        configured = self.socket_connect_timeout
        self.socket_connect_timeout = max(MIN_WAIT_S, min(left, configured or CONNECT_TIMEOUT_S))
        try:
            return super()._connect()  # type: ignore[misc]
        finally:
            self.socket_connect_timeout = configured

    def _fit_timeout(self, sending: bool) -> None:
        """Fit the socket's timeout to what is left of the call, changing it only when it
        must: ``settimeout`` lets go of the GIL (an ``ioctl``), and getting it back behind a
        busy thread cost more than the read. The socket holds the value in force
        (``gettimeout`` keeps the GIL), so redis-py's own changes are seen too."""
        sock = self._sock  # type: ignore[attr-defined]
        if sock is None:
            return
        left = _left()
        current = sock.gettimeout()
        limit = self.socket_timeout
        if left is not None and left <= 0 and sending:
            # Nothing sent yet, so the connection stays usable: a command the caller no
            # longer waits for must not run (a retry past the bound would push a job twice).
            raise redis.TimeoutError("no time left to send within the call's bound")
        if left is None or (limit is not None and limit < left):
            # The connection's own timeout (the listener's reads; a call longer than it).
            if limit is None:
                if current is not None:
                    sock.settimeout(None)
            elif current is None or abs(current - limit) > 1e-6:
                sock.settimeout(limit)
            return
        # A read must not give up before the deadline (redis-py would resend a command that
        # may have arrived), nor much after it: any timeout from what is left to ``SLACK_S``
        # more will do, so the reads of calls with the same bound seldom change it.
        left = max(MIN_WAIT_S, left)
        if current is None or not left <= current <= left + SLACK_S:
            sock.settimeout(left + SLACK_S / 2)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is None:  # type: ignore[attr-defined]
            self.connect_check_health(check_health=False)  # type: ignore[attr-defined]
        self._fit_timeout(sending=True)
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._fit_timeout(sending=False)
        return super().read_response(*args, **kwargs)


class DeadlineSSLConnection(DeadlineConnection, redis.SSLConnection):
    """``DeadlineConnection`` over TLS (``rediss://``)."""


class DeadlineUnixConnection(DeadlineConnection, redis.UnixDomainSocketConnection):
    """``DeadlineConnection`` over a unix socket (``unix://``)."""


_DEADLINE_CLASSES: dict[type[Any], type[Any]] = {
    redis.Connection: DeadlineConnection,
    redis.SSLConnection: DeadlineSSLConnection,
    redis.UnixDomainSocketConnection: DeadlineUnixConnection,
}


class BoundedPool(redis.BlockingConnectionPool):
    """At most ``max_connections``; a caller waits for a free one until its call's deadline."""

    @property  # type: ignore[override]
    def timeout(self) -> float | None:
        left = _left()
        if left is None:
            return self._wait_s
        return max(0.0, left)

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._wait_s = value


def bounded_redis(
    url: str, settings: Settings, *, socket_timeout: float, connections: int, retries: int = 1
) -> redis.Redis[bytes]:
    """A redis-py client for ``url`` whose calls inside ``CallBound.run`` end by its deadline.

    ``socket_timeout`` bounds a read outside a bounded call (the result listener's
    reads). Every option else is ``tasks/connections.py``'s: keepalive, health checks, TLS.
    """
    options = connection_options()
    options["socket_timeout"] = socket_timeout
    options["socket_connect_timeout"] = min(CONNECT_TIMEOUT_S, socket_timeout)
    if uses_tls(url):
        options.update(tls_options(settings))
    options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries)
    # RESP2, as redis-py before 8 spoke by default: its RESP3 parser formats every pub/sub
    # message into a debug log line (``str`` of the whole status record) even with debug
    # logging off, a fifth of the client's CPU per job; and RESP2 needs no HELLO per connection.
    options["protocol"] = 2
    # One more than the calls may hold: the result listener keeps one for its subscription.
    pool = BoundedPool.from_url(url, max_connections=connections + 1, timeout=socket_timeout, **options)
    pool.connection_class = _DEADLINE_CLASSES.get(pool.connection_class, pool.connection_class)
    client: redis.Redis[bytes] = redis.Redis.from_pool(pool)  # type: ignore[attr-defined]  # owns the pool
    return client


class CallBound:
    """Runs calls on the caller's thread, each ending by its deadline."""

    def __init__(self, default_s: float, where: str, connections: int = CONNECTIONS) -> None:
        """``where`` names the Redis for messages (URLs without passwords)."""
        self.default_s = default_s
        self.where = where
        self.connections = connections
        self._closed = False

    def deadline(self, timeout: float | None) -> float:
        """The monotonic time a call given ``timeout`` (None: the default) must end by."""
        return time.monotonic() + (self.default_s if timeout is None else timeout)

    def step(self, deadline: float | None) -> float:
        """The deadline of one step (a message sent) of a call that must end by
        ``deadline`` (None: no bound for the whole call): the earlier of it and the
        default bound from now, so a hung Redis is reported after the default bound even
        inside a bulk call given a long ``timeout``."""
        step = self.deadline(None)
        return step if deadline is None else min(deadline, step)

    def current(self) -> float:
        """The deadline of the call running on this thread (outside one: the default from now)."""
        deadline: float | None = getattr(_call, "deadline", None)
        return self.deadline(None) if deadline is None else deadline

    def run(self, what: str, fn: Callable[[], T], deadline: float) -> T:
        """``fn()``, or ``BrokerUnavailable`` naming ``what`` once ``deadline`` passes or Redis fails.

        A call inside another keeps the earlier of the two deadlines.
        """
        if self._closed:
            raise BrokerUnavailable(f"{what}: the client is closed")
        outer: float | None = getattr(_call, "deadline", None)
        if outer is not None:
            deadline = min(deadline, outer)
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnavailable(f"{what}: no time left within the call's bound ({self.where})")
        _call.deadline = deadline
        try:
            return fn()
        except IO_ERRORS as exc:
            if self._closed:
                raise BrokerUnavailable(f"{what}: the client was closed during the call") from None
            if time.monotonic() >= deadline:
                raise timed_out(what, left, self.where) from exc
            raise translate(exc, what, self.where) from exc
        finally:
            _call.deadline = outer

    def close(self) -> None:
        """Refuse new calls (``BrokerUnavailable``)."""
        self._closed = True


class AsyncCallBound:
    """``CallBound`` for the ``AsyncClient``: each call awaited for at most its bound.

    No threads: the call is cancelled when its bound passes (redis-py's asyncio client
    then drops the connection the command was on, so a late reply is never read as the
    answer to the next command), and the caller gets ``BrokerUnavailable`` at once.
    """

    def __init__(self, default_s: float, where: str) -> None:
        self.default_s = default_s
        self.where = where
        self.closed = False

    def deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.default_s if timeout is None else timeout)

    def step(self, deadline: float | None) -> float:
        """``CallBound.step``: one step's deadline within a call that must end by ``deadline``."""
        step = self.deadline(None)
        return step if deadline is None else min(deadline, step)

    async def run(self, what: str, call: Awaitable[T], deadline: float) -> T:
        """``await call``, or ``BrokerUnavailable`` naming ``what`` once ``deadline`` passes
        or Redis fails."""
        left = deadline - time.monotonic()
        if self.closed or left <= 0:
            if inspect.iscoroutine(call):
                call.close()  # never awaited: no "coroutine was never awaited" warning
            reason = "the client is closed" if self.closed else "no time left within the call's bound"
            raise BrokerUnavailable(f"{what}: {reason} ({self.where})")
        try:
            async with asyncio.timeout(left):
                return await call
        except TimeoutError:
            raise timed_out(what, left, self.where) from None
        except IO_ERRORS as exc:
            raise translate(exc, what, self.where) from exc
