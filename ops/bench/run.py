"""``inferq bench``: load a model through the real system and report latency percentiles.

Two load shapes:
- open loop (``rate``): Poisson arrivals at a fixed rate from a schedule made in
  advance, sent by a small pool of sender threads; each job's latency is measured from
  its *intended* send time, so a system that falls behind cannot hide its queueing
  (no coordinated omission). Sends more than 1 ms behind schedule are counted.
- closed loop (``concurrency``): C jobs in flight, each sender submitting its next job
  as soon as the previous result arrives.

Percentiles are computed from every sample (numpy on exact data), never averaged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ops.bench.inputs import pick_inputs
from ops.bench.loadgen import poisson_schedule
from ops.stats import summarize
from tasks.errors import InferqError
from tasks.wire import Result

PERCENTILES = (50, 90, 95, 99, 99.9)
MEASURES = ("end_to_end", "queue", "batch_wait", "compute", "processing")
LATE_S = 0.001


class BenchClient(Protocol):
    """What a load needs of a client: the ``Client``, or ``HttpTarget`` (the gateway)."""

    def submit(self, model: str, x: Any, *, variant: str | None = ..., no_cache: bool = ...) -> Any: ...

    def wait_all(self, jobs: Any, timeout: float | None = ...) -> list[Result | InferqError]: ...


@dataclass
class BenchConfig:
    model: str
    variant: str | None = None
    rate: float | None = None  # open loop, jobs/s
    concurrency: int | None = None  # closed loop
    duration_s: float = 10.0
    repeat_fraction: float = 0.0  # share of jobs that resend an earlier input (cache hits)
    senders: int = 4
    timeout_s: float = 60.0
    # A fresh seed per run: fresh inputs, so an earlier run's results are not cache hits.
    seed: int = field(default_factory=lambda: time.time_ns() % 2**32)
    no_cache: bool = False  # "cache off": every job computed, nothing read from the cache
    label: str = ""
    #: The configuration a comparison runs this load on (``bench --compare``), named in the header.
    configuration: str = ""

    @property
    def mode(self) -> str:
        return "open" if self.rate is not None else "closed"


@dataclass
class Record:
    intended_at: float
    sent_at: float = 0.0
    done_at: float = 0.0
    result: Result | None = None
    error: str | None = None


@dataclass
class BenchRun:
    config: BenchConfig
    records: list[Record] = field(default_factory=list)
    started_at: float = 0.0
    #: When sending stopped: the schedule's or the duration's end, or the stop.
    ended_at: float = 0.0
    stopped_early: bool = False

    @property
    def measured_s(self) -> float:
        """How long the load ran (shorter than asked when stopped early)."""
        if not self.ended_at:
            return self.config.duration_s
        return max(0.0, min(self.config.duration_s, self.ended_at - self.started_at))

    def report(self) -> dict[str, Any]:
        """Everything a person or a script needs, JSON-ready."""
        ok = [r for r in self.records if r.result is not None]
        done = [r for r in self.records if r.done_at]
        span = (max(r.done_at for r in done) - self.started_at) if done else float("nan")
        lat: dict[str, list[float]] = {m: [] for m in MEASURES}
        for r in ok:
            assert r.result is not None
            t = r.result.timing
            start = r.intended_at if self.config.mode == "open" else r.sent_at
            lat["end_to_end"].append((r.done_at - start) * 1e3)
            if not r.result.cached and t.received_at > 0:  # an HTTP infer answer has no worker timing
                lat["queue"].append(t.queue_ms)
                lat["batch_wait"].append(t.batch_wait_ms)
                lat["compute"].append(t.compute_ms)
                lat["processing"].append(t.processing_ms)
        hits = sum(1 for r in ok if r.result is not None and r.result.cached)
        computed = [r.result.timing.batch_size for r in ok if r.result is not None and not r.result.cached]
        return {
            "model": self.config.model,
            "variant": self.config.variant,
            "label": self.config.label,
            "mode": self.config.mode,
            "offered_rate": self.config.rate,
            "concurrency": self.config.concurrency,
            "duration_s": self.config.duration_s,
            "measured_s": self.measured_s,
            "repeat_fraction": self.config.repeat_fraction,
            "configuration": self.config.configuration,
            "sent": len(self.records),
            "completed": len(done),
            "errors": len(self.records) - len(ok),
            # Sent more than 1 ms after their scheduled time (the load generator fell
            # behind: its latency then includes that lag, as a user's would).
            "late_sends": sum(1 for r in self.records if r.sent_at - r.intended_at > LATE_S)
            if self.config.mode == "open"
            else 0,
            "stopped_early": self.stopped_early,
            "throughput": len(done) / span if done and span > 0 else 0.0,
            # What the Poisson schedule actually offered (it varies around the asked rate).
            "sent_rate": len(self.records) / self.measured_s
            if self.config.mode == "open" and self.measured_s > 0
            else None,
            "cache_hit_ratio": hits / len(ok) if ok else 0.0,
            "mean_batch": float(np.mean(computed)) if computed else float("nan"),
            "latency_ms": {m: summarize(v, PERCENTILES) for m, v in lat.items()},
            "samples_ms": {m: v for m, v in lat.items()},
        }


def run_bench(
    client: BenchClient,
    cfg: BenchConfig,
    pool: np.ndarray,
    *,
    progress: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
) -> BenchRun:
    """Run the load; ``stop`` (or Ctrl-C) ends sending early and still reports what was measured."""
    stop = stop or threading.Event()
    run = BenchRun(cfg)
    if cfg.mode == "open":
        assert cfg.rate is not None and cfg.rate > 0
        offsets = poisson_schedule(cfg.rate, cfg.duration_s, cfg.seed)
        inputs = pick_inputs(pool, len(offsets), cfg.repeat_fraction, cfg.seed)
        _open_loop(client, cfg, run, offsets, inputs, progress, stop)
    else:
        assert cfg.concurrency is not None and cfg.concurrency > 0
        inputs = pick_inputs(pool, max(1000, int(cfg.duration_s * 5000)), cfg.repeat_fraction, cfg.seed)
        _closed_loop(client, cfg, run, inputs, progress, stop)
    return run


def _finish(client: BenchClient, rec: Record, job: Any, timeout: float) -> None:
    try:
        rec.result = job.wait(timeout=timeout)
    except InferqError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.done_at = time.time()


def _open_loop(
    client: BenchClient,
    cfg: BenchConfig,
    run: BenchRun,
    offsets: np.ndarray,
    inputs: Sequence[np.ndarray],
    progress: Callable[[float], None] | None,
    stop: threading.Event,
) -> None:
    run.started_at = start = time.time() + 0.1
    jobs: list[tuple[Record, Any]] = []
    lock = threading.Lock()

    def send(i: int, rec: Record) -> None:
        rec.sent_at = time.time()
        try:
            job = client.submit(cfg.model, inputs[i], variant=cfg.variant, no_cache=cfg.no_cache)
        except InferqError as exc:
            rec.error, rec.done_at = f"{type(exc).__name__}: {exc}", time.time()
            return
        with lock:
            jobs.append((rec, job))

    with ThreadPoolExecutor(cfg.senders, thread_name_prefix="inferq-bench") as pool:
        run.ended_at = start + cfg.duration_s
        try:
            for i, off in enumerate(offsets):
                if stop.is_set():
                    run.stopped_early, run.ended_at = True, time.time()
                    break
                intended = start + float(off)
                delay = intended - time.time()
                if delay > 0:
                    time.sleep(delay)
                rec = Record(intended)
                run.records.append(rec)
                pool.submit(send, i, rec)
                if progress is not None:
                    progress(min(1.0, float(off) / cfg.duration_s))
        except KeyboardInterrupt:
            run.stopped_early, run.ended_at = True, time.time()
    by_id = {id(rec): job for rec, job in jobs}
    waiting = [(rec, by_id[id(rec)]) for rec in run.records if id(rec) in by_id]
    results = client.wait_all([j for _, j in waiting], timeout=cfg.timeout_s) if waiting else []
    for (rec, job), res in zip(waiting, results, strict=True):
        if isinstance(res, Result):
            rec.result = res
            assert res.timing.end_to_end_ms is not None
            rec.done_at = job.enqueued_at + res.timing.end_to_end_ms / 1e3
        else:
            rec.error, rec.done_at = f"{type(res).__name__}: {res}", time.time()


def _closed_loop(
    client: BenchClient,
    cfg: BenchConfig,
    run: BenchRun,
    inputs: Sequence[np.ndarray],
    progress: Callable[[float], None] | None,
    stop: threading.Event,
) -> None:
    assert cfg.concurrency is not None
    run.started_at = time.time()
    deadline = run.started_at + cfg.duration_s
    counter = iter(range(len(inputs)))
    lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set() and time.time() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            rec = Record(time.time(), sent_at=time.time())
            with lock:
                run.records.append(rec)
            try:
                job = client.submit(cfg.model, inputs[i], variant=cfg.variant, no_cache=cfg.no_cache)
            except InferqError as exc:
                rec.error, rec.done_at = f"{type(exc).__name__}: {exc}", time.time()
                continue
            _finish(client, rec, job, cfg.timeout_s)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(cfg.concurrency)]
    for t in threads:
        t.start()
    run.ended_at = deadline

    def note_stop() -> None:
        # A stop seen before the deadline cut the load short; one after it (while the
        # last jobs finish) did not.
        if stop.is_set() and run.ended_at == deadline and time.time() < deadline:
            run.stopped_early, run.ended_at = True, time.time()

    try:
        while any(t.is_alive() for t in threads):
            time.sleep(0.1)
            note_stop()
            if progress is not None:
                progress(min(1.0, (time.time() - run.started_at) / cfg.duration_s))
    except KeyboardInterrupt:
        stop.set()
        note_stop()
        for t in threads:
            t.join(cfg.timeout_s)
    note_stop()


def find_knee(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last sweep point before the system saturates: achieved throughput falls under
    95% of offered (open loop) or stops growing by 5% (closed loop), or p99 more than
    doubles from one point to the next."""
    knee = None
    for prev, cur in zip([None, *points[:-1]], points, strict=True):
        p99 = cur["latency_ms"]["end_to_end"]["p99"]
        if cur["mode"] == "open" and cur["throughput"] < 0.95 * (
            cur["sent_rate"] or cur["offered_rate"] or 0
        ):
            break
        if prev is not None:
            if cur["mode"] == "closed" and cur["throughput"] < 1.05 * prev["throughput"]:
                break
            if p99 > 2 * prev["latency_ms"]["end_to_end"]["p99"]:
                break
        knee = cur
    return knee
