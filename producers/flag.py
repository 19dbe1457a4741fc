"""A watched job's "it arrived" flag, for the sync ``ResultListener``.

A wake-up per watched id, made up front, cost ~2 µs each (a tenth of the client's GIL
time in a bulk submission of 30,000 inputs), yet most of a bulk submission's results
arrive before anyone waits on them. A ``Flag`` is a bool until a waiter has to block:
``arm`` then installs the one ``Latch`` (``producers/latch.py``) it blocks on. The
listener sets and arms flags only under its lock, so a wake-up is never lost between a
waiter's look and its sleep.
"""

from __future__ import annotations

from producers.latch import Latch


class Flag:
    """``Event``'s ``is_set``/``set``, with a ``Latch`` installed by ``arm`` when needed."""

    __slots__ = ("_event", "_set")

    def __init__(self, is_set: bool = False) -> None:
        self._set = is_set
        self._event: Latch | None = None

    def is_set(self) -> bool:
        return self._set

    @property
    def awaited(self) -> bool:
        """Whether a waiter is (or was) blocked on it: ``arm`` installed its ``Latch``."""
        return self._event is not None

    def set(self) -> None:
        """Mark it arrived and wake a waiter blocked on it (the listener's lock held)."""
        self._set = True
        if self._event is not None:
            self._event.set()

    def arm(self, event: Latch) -> Latch | None:
        """The ``Latch`` to block on until ``set`` (the listener's lock held): ``event``,
        made by the caller before it took the lock (64 waiters and the listener thread
        contend for that lock: nothing runs under it that need not), unless another waiter's is
        already there; None when already set."""
        if self._set:
            return None
        if self._event is None:
            self._event = event
        return self._event
