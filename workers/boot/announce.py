"""What a worker tells Redis about itself: the models it serves and that it is alive.

Producers read the model descriptions to learn a model's version and input specs
without touching the models folder; ``inferq status`` reads the heartbeats.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from tasks import constants as C
from tasks.schema import ModelInfo
from tasks.wire import ModelAnnouncement, WorkerBeat

log = logging.getLogger(__name__)

#: The model descriptions are written again every this many beats (30 s by default).
ANNOUNCE_EVERY = 6


def announce_models(client: redis.Redis[bytes], models: Iterable[ModelInfo]) -> None:
    """Publish model descriptions (kept without TTL: a restart must not forget them)."""
    mapping: dict[str | bytes, bytes | float | int | str] = {
        m.key: ModelAnnouncement.encode(m) for m in models
    }
    if mapping:
        client.hset(C.MODELS_KEY, mapping=mapping)


class Heartbeat(threading.Thread):
    """Writes this worker's state every few seconds; a failed beat is logged, never fatal."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        hostname: str,
        models: list[ModelInfo],
        stats: Callable[[], dict[str, Any]],
        interval_s: float = C.WORKER_HEARTBEAT_S,
    ) -> None:
        super().__init__(name="inferq-heartbeat", daemon=True)
        self.client = client
        self.hostname = hostname
        self.models = models
        self.stats = stats
        self.interval_s = interval_s
        self.started_at = time.time()
        self._beats = 0
        self._stop_event = threading.Event()

    def beat(self) -> None:
        beat = WorkerBeat(
            hostname=self.hostname,
            pid=os.getpid(),
            models=tuple(m.key for m in self.models),
            started_at=self.started_at,
            seen_at=time.time(),
            stats=self.stats(),
        )
        # Re-announce now and then: a result backend with an LRU policy may evict the
        # hash. Not every beat: an idle worker's commands count (issue 18 allows 2/s).
        self._beats += 1
        if self._beats % ANNOUNCE_EVERY == 1:
            announce_models(self.client, self.models)
        self.client.hset(C.WORKERS_KEY, self.hostname, beat.encode())

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.beat()
            except Exception as exc:  # Redis down: keep serving, retry next beat
                log.warning("heartbeat failed: %s", exc)
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        # Join first: a beat in progress would otherwise write the entry back after
        # we delete it, and the worker would look alive for three more intervals.
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.interval_s + 2)
        with contextlib.suppress(Exception):
            self.client.hdel(C.WORKERS_KEY, self.hostname)
