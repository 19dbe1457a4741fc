"""Dynamic batching: group jobs per batch key, run a group when full or when its oldest
job has waited ``max_wait``. An item may hold several jobs (a part of a bulk message,
``rows`` of them): a group is full when its rows reach ``max_size``.

One thread per worker process runs every model call (LiteRT interpreters are not
thread-safe, and one compute thread per process keeps the CPU budget predictable);
the Celery message loop only decodes, validates and hands jobs over, so messages keep
flowing while a batch computes. Jobs that arrive during a batch are sorted in as
soon as it ends: under load batches fill up by themselves (continuous batching), and
at low load a lone job waits at most ``max_wait``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Group(Generic[T]):
    max_size: int
    deadline: float  # monotonic time the oldest job's wait runs out
    items: list[tuple[int, T]] = field(default_factory=list)  # (rows, item)
    rows: int = 0


class Batcher(Generic[T]):
    """Collects items from any thread; calls ``run_batch(items)`` on its own thread."""

    def __init__(self, run_batch: Callable[[list[T]], None], name: str = "inferq-batcher") -> None:
        self._run_batch = run_batch
        self._queue: queue.SimpleQueue[tuple[Hashable, int, float, int, T] | None] = queue.SimpleQueue()
        self._groups: dict[Hashable, _Group[T]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    def put(self, key: Hashable, item: T, *, max_size: int, max_wait_s: float, rows: int = 1) -> None:
        """Add one item of ``rows`` jobs (at most ``max_size``: the caller splits bigger
        ones); ``key`` groups items that can share a model call."""
        self._queue.put((key, max(1, max_size), time.monotonic() + max(0.0, max_wait_s), rows, item))

    def stop(self, timeout: float = 30.0) -> list[T]:
        """Finish the batch in hand, then return every job not yet run (to be requeued)."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        left: list[T] = [i for g in self._groups.values() for _, i in g.items]
        self._groups.clear()
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not None:
                left.append(entry[4])
        return left

    def _add(self, entry: tuple[Hashable, int, float, int, T]) -> None:
        key, max_size, deadline, rows, item = entry
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(max_size=max_size, deadline=deadline)
        group.items.append((rows, item))
        group.rows += rows

    def _loop(self) -> None:
        while not self._stopping.is_set():
            timeout = None
            if any(g.rows >= g.max_size for g in self._groups.values()):
                timeout = 0.0  # a group still full after its last batch runs now, not at its deadline
            elif self._groups:
                timeout = max(0.0, min(g.deadline for g in self._groups.values()) - time.monotonic())
            try:
                entry = self._queue.get(timeout=timeout)
                if entry is None:
                    break
                self._add(entry)
                while True:  # sort in everything that arrived meanwhile
                    entry = self._queue.get_nowait()
                    if entry is None:
                        self._stopping.set()
                        break
                    self._add(entry)
            except queue.Empty:
                pass
            if self._stopping.is_set():
                break
            self._flush_ready()

    def _flush_ready(self) -> None:
        now = time.monotonic()
        ready = [k for k, g in self._groups.items() if g.rows >= g.max_size or g.deadline <= now]
        # Oldest first, so a busy model cannot starve a quiet one.
        for key in sorted(ready, key=lambda k: self._groups[k].deadline):
            group = self._groups[key]
            taken, rows = 0, 0
            for n, _ in group.items:  # whole items, up to max_size rows (at least one item)
                if taken and rows + n > group.max_size:
                    break
                taken += 1
                rows += n
            batch = [item for _, item in group.items[:taken]]
            rest = group.items[taken:]
            if rest:
                group.items = rest  # the rest's oldest has waited as long: keep the deadline
                group.rows -= rows
            else:
                del self._groups[key]
            try:
                self._run_batch(batch)
            except Exception:  # run_batch answers its own jobs; this is a last resort
                log.exception("batch of %d failed outside its own error handling", len(batch))
            self.batches += 1


class Completer(threading.Thread):
    """Runs callables in order on one thread: a batch's store, ack and events.

    The batcher hands each computed batch here and starts the next one, so storing
    results overlaps with computing. The queue is short on purpose: if storing falls
    behind, the batcher waits instead of piling up results in memory.

    ``on_idle`` (optional) runs once the queue has stayed empty for ``idle_s`` after a
    callable, and before the thread ends: work that callables leave for later (task
    events sent a few batches at a time) is never left waiting for a next batch.
    """

    def __init__(
        self, depth: int = 4, *, on_idle: Callable[[], None] | None = None, idle_s: float = 0.05
    ) -> None:
        super().__init__(name="inferq-completer", daemon=True)
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._on_idle = on_idle
        self._idle_s = idle_s

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish everything submitted so far, then end."""
        if self.is_alive():
            self._queue.put(None)
            self.join(timeout)

    def run(self) -> None:
        owed = False  # a callable ran since on_idle last did
        while True:
            try:
                fn = self._queue.get(timeout=self._idle_s if owed else None)
            except queue.Empty:
                self._idle()
                owed = False
                continue
            if fn is None:
                if owed:
                    self._idle()
                return
            try:
                fn()
            except Exception:  # each callable answers for its own batch
                log.exception("completing a batch failed")
            owed = self._on_idle is not None

    def _idle(self) -> None:
        assert self._on_idle is not None
        try:
            self._on_idle()
        except Exception:
            log.exception("the completer's idle work failed")
