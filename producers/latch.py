"""A one-shot wake-up: ``threading.Event``'s ``set``/``is_set``/``wait`` on one bare lock.

Why not ``threading.Event``: with 64 request threads sharing one ``Client``, every single
job blocks twice (for its group's send, ``producers/coalesce.py``, and for its result,
``producers/listener.py``) and is woken twice. An ``Event`` builds a ``Condition`` on a
lock, and each wait on it makes another lock and runs a dozen Python calls under the
GIL; making one, setting it and waiting on it took 4.6 µs here where a ``Latch`` takes
0.5 µs (docs/benchmarks.md, "Fourth session"). A ``Latch`` is the lock such a wait
would have made: held from the start and released once by ``set``; each waiter takes it
and hands it straight on, so every waiter wakes.

``set`` must not race with another ``set`` of the same latch: its users call it under
their own lock (the listener) or from the one thread that owns the entry (the
coalescer's leader of the moment).
"""

from __future__ import annotations

import threading


class Latch:
    """Unset until ``set``; ``wait`` blocks until then (or the timeout)."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Wake every waiter, now and later; a second ``set`` does nothing."""
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False when ``timeout`` seconds passed first (None: no limit)."""
        if self._set:
            return True
        if self._lock.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._lock.release()  # handed on: the next waiter wakes too
            return True
        return self._set
