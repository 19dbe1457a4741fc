"""Redis calls a worker must not drop: retried with backoff until they succeed or it is pointless.

Storing a computed batch and acknowledging its messages are the two writes that make a
job done. If Redis is restarting or the network is down, dropping either would leave
the job to wait out the visibility timeout and be computed again; retrying keeps the
result. It stops being worth it once the timeout has passed (another worker will have
taken the messages back), or when the worker is stopping and Redis stays away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

#: When stopping, a worker waits this long for Redis before leaving the rest to redelivery.
STOPPING_GRACE_S = 5.0


class GaveUp(Exception):
    """A call kept failing for longer than it was worth retrying."""


class Persistent:
    """Calls ``fn`` again after connection errors, with backoff from 0.1 s up to 5 s."""

    def __init__(self, give_up_s: float, stopping: threading.Event) -> None:
        self.give_up_s = give_up_s
        self.stopping = stopping

    def call(self, what: str, fn: Callable[[], T]) -> T:
        t0 = time.monotonic()
        delay = 0.1
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                waited = time.monotonic() - t0
                limit = min(self.give_up_s, STOPPING_GRACE_S) if self.stopping.is_set() else self.give_up_s
                if waited >= limit:
                    raise GaveUp(f"{what}: Redis unreachable for {waited:.0f} s ({exc})") from exc
                log.warning("%s failed (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay = min(5.0, delay * 2)
