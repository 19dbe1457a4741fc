"""Leases on unacknowledged messages: renewed while their worker lives, taken back when it dies.

kombu's Redis transport acknowledges late by keeping every delivered message in the
``unacked`` hash, scored in ``unacked_index`` by delivery time, and restores those
older than the visibility timeout. Two things make that alone a poor fit here:

- the timeout must outlast the slowest job a live worker may hold, or a slow batch is
  handed to a second worker while the first still runs it; yet a killed worker's jobs
  then wait that long to come back. Renewing the score of every message this worker
  still holds (a lease) lets the timeout be short: only a worker that stopped renewing,
  because it died or lost the network, loses its messages.
- kombu 5.7 sweeps every ``unacked_restore_interval * unacked_restore_throttle``
  (100 s by default). The sweep here runs every few seconds.

A sweep takes back messages of any of inferq's model queues (``inferq.<model>.<variant>``,
whichever worker took them); other entries are left to kombu's own sweep. Each take-back
is one atomic script that re-checks the score, so a lease renewed meanwhile, an ack, or
another worker's sweep of the same message all win over it: a message is put back once.
It goes back under a new delivery tag, so a worker that was only cut off, and comes
back to ack or renew the old tag, cannot touch the new delivery's record.

Ages are measured on Redis's clock (``TIME``), never a worker's, so hosts whose clocks
disagree still agree on which leases lapsed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

from tasks import lua
from tasks.kombu_layout import (
    UNACKED,
    UNACKED_INDEX,
    decode_unacked_entry,
    is_model_queue,
    redelivery,
)

log = logging.getLogger(__name__)


class Leases(threading.Thread):
    """Renews this worker's leases and takes back expired ones, on its own thread."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        visibility_timeout_s: float,
        on_taken_back: Callable[[str, int], None] | None = None,
    ) -> None:
        """``on_taken_back(queue, n)`` is told of each sweep's take-backs (for metrics)."""
        super().__init__(name="inferq-leases", daemon=True)
        self.client = client
        self.on_taken_back = on_taken_back
        self.visibility_timeout_s = visibility_timeout_s
        #: Renew four times per timeout: a lease survives three lost renewals.
        self.renew_every_s = max(0.2, visibility_timeout_s / 4)
        self.sweep_every_s = max(0.2, min(visibility_timeout_s / 4, 5.0))
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._take_back = client.register_script(lua.source("take_back"))
        self._renew = client.register_script(lua.source("renew"))
        self.taken_back = 0

    def hold(self, tags: Iterable[str]) -> None:
        with self._lock:
            self._held.update(t for t in tags if t)

    def release(self, tags: Iterable[str]) -> None:
        with self._lock:
            self._held.difference_update(tags)

    @property
    def held(self) -> int:
        return len(self._held)

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        next_renew = next_sweep = time.monotonic()
        while not self._stop_event.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew:
                    next_renew = now + self.renew_every_s
                    self.renew()
                if now >= next_sweep:
                    next_sweep = now + self.sweep_every_s
                    self.sweep()
            except redis.RedisError as exc:  # broker away: try again next turn
                log.warning("lease upkeep failed: %s", exc)
            except Exception:  # this thread must outlive any surprise: it keeps leases alive
                log.exception("lease upkeep failed")
            self._stop_event.wait(max(0.05, min(next_renew, next_sweep) - time.monotonic()))

    def renew(self) -> None:
        """Stamp every message this worker holds with the current time (only if still unacked)."""
        with self._lock:
            tags = list(self._held)
        for i in range(0, len(tags), 1000):
            self._renew(keys=[UNACKED_INDEX], args=tags[i : i + 1000])

    def sweep(self, page: int = 500, max_pages: int = 20) -> int:
        """Put model-queue messages whose lease ran out back at the head of their lists."""
        sec, usec = self.client.time()
        ceil = sec + usec / 1e6 - self.visibility_timeout_s
        with self._lock:
            mine = self._held.copy()
        per_queue: dict[str, int] = {}
        skipped = 0  # entries left where they are (others' queues, our own): page past them
        for _ in range(max_pages):
            tags = self.client.zrangebyscore(UNACKED_INDEX, "-inf", ceil, start=skipped, num=page)
            if not tags:
                break
            skipped += len(tags) - self._take_back_page(tags, ceil, mine, per_queue)
            if len(tags) < page:
                break
        n = sum(per_queue.values())
        if n:
            log.warning("took back %d message(s) whose worker stopped renewing its lease", n)
            self.taken_back += n
            if self.on_taken_back is not None:
                for queue, k in per_queue.items():
                    self.on_taken_back(queue, k)
        return n

    def _take_back_page(
        self, tags: list[bytes], ceil: float, mine: set[str], per_queue: dict[str, int]
    ) -> int:
        taken = 0
        entries = self.client.hmget(UNACKED, tags)
        for tag, entry in zip(tags, entries, strict=True):
            if tag.decode(errors="replace") in mine:
                continue  # ours, renewed on its next turn
            if entry is None:
                continue  # acked between the two reads
            try:
                message, _exchange, routing_key = decode_unacked_entry(entry)
                if not is_model_queue(routing_key):
                    continue  # kombu's own sweep restores other queues' messages
                target, payload = redelivery(message, routing_key)
            except (ValueError, TypeError, AttributeError, KeyError):
                log.warning("unacked entry %r is not a kombu message; left for kombu", tag)
                continue
            if self._take_back(keys=[UNACKED, UNACKED_INDEX, target], args=[tag, ceil, payload]):
                per_queue[routing_key] = per_queue.get(routing_key, 0) + 1
                taken += 1
        return taken
