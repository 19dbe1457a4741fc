"""Single-job submissions from many threads, claimed and sent together.

A web backend's request threads share one ``Client`` and each submits one input. Alone,
each submission pays its own round trips (the claim, the send), and under 64 threads
those dominate the client's CPU: redis-py's per-command work, a send and a receive each.
So concurrent submissions form a group: the first thread to arrive leads, taking every
submission queued meanwhile (its own included) through one claim call and one send
pipeline; the others wait for its answer. The leader hands over to the first of those
who arrived during its round trips, so no thread leads more than the one group it is
in, and a thread alone (nothing else in flight) submits as it would without a group.
A child process after a fork starts with no group in flight.

Each waiter keeps its own bound: past its deadline it stops waiting and gets
``BrokerUnavailable`` (its job may or may not be queued, as for any submission cut
short); the leader's round trips run within the leader's bound.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis

from producers.latch import Latch
from producers.sender import Outgoing

P = TypeVar("P")
R = TypeVar("R")


class _Entry(Generic[P, R]):
    __slots__ = ("done", "error", "item", "lead", "out", "wake")

    def __init__(self, item: P) -> None:
        self.item = item
        self.wake = Latch()
        self.lead = False
        self.done = False
        self.out: R | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[P, R]):
    """Runs ``run(items)`` for the items submitted concurrently, one group at a time.

    ``run`` answers per item: its result, or an exception for that item alone; an
    exception ``run`` raises is every item's answer.
    """

    def __init__(self, run: Callable[[list[P]], list[R | BaseException]]) -> None:
        self._run = run
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: list[_Entry[P, R]] = []
        self._leading = False

    def submit(self, item: P, deadline: float) -> R:
        """``item``'s answer (raised if an exception); ``redis.TimeoutError`` past ``deadline``
        (monotonic) while another thread's group runs it."""
        if self._pid != os.getpid():
            # A client made before a fork (gunicorn, Celery prefork): a group the parent had
            # in flight has no leader here, and its lock may be held by no thread of ours.
            self._reset()
        me: _Entry[P, R] = _Entry(item)
        with self._lock:
            self._queue.append(me)
            if not self._leading:
                self._leading = me.lead = True
        if not me.lead:
            me.wake.wait(max(0.0, deadline - time.monotonic()))
            if not (me.done or me.lead) and self._give_up(me):
                raise redis.TimeoutError("no answer within the call's bound: the group it joined is slow")
            if not me.done:  # handed the lead: this thread runs the group it is in
                self._lead()
        elif not me.done:
            self._lead()
        if me.error is not None:
            raise me.error
        return me.out  # type: ignore[return-value]

    def _give_up(self, me: _Entry[P, R]) -> bool:
        """Leave the queue past the deadline; False when an answer or the lead came meanwhile."""
        with self._lock:
            if me.done or me.lead:
                return False
            if me in self._queue:
                self._queue.remove(me)
            return True

    def _lead(self) -> None:
        with self._lock:
            group, self._queue = self._queue, []
        try:
            answers = self._run([e.item for e in group])
        except BaseException as exc:  # every submission in the group fails alike
            answers = [exc] * len(group)
        for entry, answer in zip(group, answers, strict=True):
            if isinstance(answer, BaseException):
                entry.error = answer
            else:
                entry.out = answer
            entry.done = True
            entry.wake.set()
        with self._lock:
            if self._queue:  # arrived during the round trips: the first of them leads next
                nxt = self._queue[0]
                nxt.lead = True
                nxt.wake.set()
            else:
                self._leading = False


def queue_sends(pipe: Any, outgoing: list[Outgoing]) -> None:
    """Queue many messages on one pipeline: each as ``Outgoing.queue_on`` would, except
    that plain messages (nothing stored beside them) bound for one list go in one
    ``LPUSH``, in the same order as one ``LPUSH`` each."""
    plain: dict[str, list[str]] = {}
    for out in outgoing:
        if out.blobs or getattr(out, "more", None):
            out.queue_on(pipe)
        else:
            plain.setdefault(out.list_key, []).append(out.message)
    for list_key, messages in plain.items():
        pipe.lpush(list_key, *messages)
