"""Client calls bounded in time, with one kind of error when Redis does not answer.

A web backend shares one ``Client`` between its request threads. If Redis hangs (a
stopped process, a partition that drops packets), a blocking Redis call waits for its
socket timeout, then redis-py and kombu retry: one ``submit`` was measured taking 136 s,
and a server's whole thread pool was stuck within seconds. So each public call runs its
Redis work on a small pool of this client's threads and waits at most its bound; past
it the caller gets ``BrokerUnavailable`` at once, and the thread that is still stuck is
freed by its own socket timeout (the client's connections try twice, half the bound
each). Redis and kombu errors become
``BrokerUnavailable`` too (a refused password or ACL: ``ConfigError``), their cause
chained, so a caller catches inferq's errors only.

The pool is per process: a client made before a fork (gunicorn, Celery prefork) gets a
fresh pool in the child, where the parent's threads do not exist.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import redis
from kombu.exceptions import KombuError

from tasks.errors import BrokerUnavailable, ConfigError

T = TypeVar("T")

#: Errors of the moment from Redis and kombu (and the sockets under them).
IO_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, KombuError, OSError, socket.timeout)


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


class CallBound:
    """Runs calls on this process's pool of client threads, each for at most its bound."""

    def __init__(self, default_s: float, where: str, threads: int = 16) -> None:
        """``where`` names the Redis for messages (URLs without passwords)."""
        self.default_s = default_s
        self.where = where
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._closed = False

    def deadline(self, timeout: float | None) -> float:
        """The monotonic time a call given ``timeout`` (None: the default) must end by."""
        return time.monotonic() + (self.default_s if timeout is None else timeout)

    def run(self, what: str, fn: Callable[[], T], deadline: float) -> T:
        """``fn()``, or ``BrokerUnavailable`` naming ``what`` once ``deadline`` passes or Redis fails."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnavailable(f"{what}: no time left within the call's bound ({self.where})")
        try:
            future = self._executor().submit(fn)
        except RuntimeError:  # the pool was shut down: the client is closed
            raise BrokerUnavailable(f"{what}: the client is closed") from None
        try:
            return future.result(left)
        except CancelledError:
            raise BrokerUnavailable(f"{what}: the client was closed during the call") from None
        except FutureTimeout:
            future.cancel()  # if it has not started, it never will
            raise timed_out(what, left, self.where) from None
        except IO_ERRORS as exc:
            raise translate(exc, what, self.where) from exc

    def close(self) -> None:
        """Refuse new calls (``BrokerUnavailable``) and let the threads end."""
        with self._lock:
            self._closed = True
            if self._pool is not None and self._pid == os.getpid():
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            if self._pool is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="inferq-client")
            return self._pool


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
