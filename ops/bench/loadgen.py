"""Load generation: open-loop Poisson arrivals, measured from each job's intended send time.

Open loop means jobs are sent on a schedule fixed in advance, whatever the system
does: a slow system cannot slow the senders down and hide its queueing (coordinated
omission). A job's latency is measured from when it *should* have been sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from producers.client import Client
from producers.job import Job
from tasks.errors import InferqError
from tasks.wire import Result


@dataclass
class Sample:
    intended_at: float  # unix time the schedule said to send
    sent_at: float
    job: Job
    result: Result | InferqError | None = None

    @property
    def latency_ms(self) -> float | None:
        """From intended send to the result seen by the client."""
        if isinstance(self.result, Result) and self.result.timing.end_to_end_ms is not None:
            seen = self.result.timing.enqueued_at + self.result.timing.end_to_end_ms / 1e3
            return (seen - self.intended_at) * 1e3
        return None


def poisson_schedule(rate: float, duration_s: float, seed: int = 0) -> np.ndarray:
    """Send offsets (seconds from start) of a Poisson process at ``rate`` jobs/s."""
    rng = np.random.default_rng(seed)
    n = max(1, int(rate * duration_s * 1.2) + 10)
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return offsets[offsets < duration_s]


def open_loop(
    client: Client,
    model: str,
    make_input: Callable[[int], np.ndarray],
    *,
    rate: float,
    duration_s: float,
    variant: str | None = None,
    seed: int = 0,
    no_cache: bool = False,
) -> tuple[list[Sample], int]:
    """Send on schedule; returns the samples (with results) and how many sends were late by > 1 ms."""
    offsets = poisson_schedule(rate, duration_s, seed)
    start = time.time() + 0.05
    samples: list[Sample] = []
    late = 0
    for i, off in enumerate(offsets):
        intended = start + float(off)
        delay = intended - time.time()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.001:
            late += 1
        job = client.submit(model, make_input(i), variant=variant, no_cache=no_cache)
        samples.append(Sample(intended, time.time(), job))
    results = client.wait_all([s.job for s in samples], timeout=max(60.0, duration_s * 10))
    for s, r in zip(samples, results, strict=True):
        s.result = r
    return samples, late
