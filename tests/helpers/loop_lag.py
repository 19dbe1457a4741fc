"""Measuring how long an asyncio event loop is kept from running other coroutines.

Two measures, because this machine is a 2-core VM shared with the worker and Redis:

- ``worst_step_ms``: the most CPU time one loop step (one callback: one resumption of
  one coroutine) used, garbage-collection pauses taken out. This is the client's own
  doing and what "never blocks the event loop" means; CPU time is immune to the other
  processes and the host taking the core away, so it can be asserted.
- ``lag``: how late a 1 ms ticker wakes (wall clock): what a request would see, with the
  scheduler and collector included. Reported, not asserted (it moves with the machine).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import time
from typing import Any

import numpy as np


class LoopMonitor:
    def __init__(self) -> None:
        self.worst_step_ms = 0.0
        self.worst_step = ""
        self.lag_ms: list[float] = []
        self.gc_pauses_ms: list[float] = []
        self._gc_total = 0.0
        self._gc_start = 0.0
        self._orig: Any = None
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            pause = time.thread_time() - self._gc_start
            self._gc_total += pause
            self.gc_pauses_ms.append(pause * 1e3)

    async def _tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lag_ms.append((time.perf_counter() - t - 0.001) * 1e3)

    def __enter__(self) -> LoopMonitor:
        monitor, orig = self, asyncio.events.Handle._run
        self._orig = orig

        def timed_run(handle: asyncio.events.Handle) -> None:
            cpu, gc_before = time.thread_time(), monitor._gc_total
            orig(handle)
            own = (time.thread_time() - cpu - (monitor._gc_total - gc_before)) * 1e3
            if own > monitor.worst_step_ms:
                monitor.worst_step_ms, monitor.worst_step = own, repr(handle)[:200]

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._orig  # type: ignore[method-assign]
        gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()

    def report(self) -> str:
        lag = np.asarray(self.lag_ms or [0.0])
        gcs = self.gc_pauses_ms or [0.0]
        return (
            f"worst step {self.worst_step_ms:.2f} ms CPU; ticker lag p50 {np.percentile(lag, 50):.2f} "
            f"p99 {np.percentile(lag, 99):.2f} max {lag.max():.2f} ms over {lag.size} ticks; "
            f"{len(self.gc_pauses_ms)} GC pauses, longest {max(gcs):.2f} ms"
        )
