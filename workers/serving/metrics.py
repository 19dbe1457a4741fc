"""Prometheus metrics and the recent-latency window ``inferq status`` shows.

Per job: queue time, batch wait, processing time; per batch: compute time and batch
size; counters of jobs by status (``success``, ``failure``, and ``expired`` for a job
that reached its worker past its deadline: not a failure of the model). Cache hits and
misses happen on the producer side (the cache check is the producer's Lua call, which
counts them in Redis); the workers export them too, so the scrape targets have the
whole picture. Each hit is exported by exactly one worker: a scrape *takes* the counts
gathered in Redis since the last take (atomically) and adds them to that worker's own
counters, so summing over workers counts each hit once (reading the shared totals
instead had every worker report every hit). End-to-end time is only known to the
client (``inferq bench``).

If the metrics port is taken, the worker serves ``/metrics`` on a free port the system
picks, logs a warning naming both, and reports the port in its heartbeat (``inferq
status``): metrics that silently vanish are worse than metrics on another port.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from tasks.constants import CACHE_STATS_KEY
from tasks.errors import ConfigError, Expired
from tasks.schema import Timing
from workers.serving.store import Outcome

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WINDOW_S = 60.0


class Metrics:
    """Records outcomes; serves ``/metrics`` on ``port`` when one is given."""

    def __init__(self, port: int | None, *, redis_client: Any = None, address: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self.succeeded = 0
        self.failed = 0
        self.expired = 0
        #: The port ``/metrics`` is served on (another than ``port`` if that was taken); None: off.
        self.port: int | None = None
        self._recent: dict[str, deque[tuple[float, float, float, float]]] = defaultdict(
            lambda: deque(maxlen=20_000)
        )
        self._prom: dict[str, Any] | None = None
        if port:
            self._prom = self._start(port, redis_client, address)

    # --- recording ------------------------------------------------------------------

    def batch_done(self, key: str, parts: list[tuple[int, Timing]], rows: int, ok: bool) -> None:
        """One model call of ``rows`` jobs on ``key`` (model:variant); ``parts``: how many
        of its jobs share each timing (a message's jobs do). Recorded once per part."""
        model, variant = key.split(":", 1)
        now = time.time()
        with self._lock:
            if not ok:
                self.failed += rows
            else:
                self.succeeded += rows
                recent = self._recent[key]
                for n, t in parts:
                    recent.extend(itertools.repeat((now, t.queue_ms, t.processing_ms, t.compute_ms), n))
        p = self._prom
        if p is None:
            return
        p["jobs"].labels(model, variant, "success" if ok else "failure").inc(rows)
        p["batch_size"].labels(model, variant).observe(rows)
        if ok and parts:
            p["compute"].labels(model, variant).observe(parts[0][1].compute_ms / 1e3)
            labels = (model, variant)
            for n, t in parts:
                p["queue"].observe(labels, t.queue_ms / 1e3, n)
                p["batch_wait"].observe(labels, t.batch_wait_ms / 1e3, n)
                p["processing"].observe(labels, t.processing_ms / 1e3, n)

    def failed_early(self, outcomes: Iterable[Outcome]) -> None:
        """Jobs answered before batching: refused (bad input, unknown model) or expired."""
        outcomes = list(outcomes)
        statuses = [end_status(o) for o in outcomes]
        with self._lock:
            self.expired += statuses.count("expired")
            self.failed += statuses.count("failure")
        if self._prom is not None:
            for o, status in zip(outcomes, statuses, strict=True):
                model, _, variant = o.key.partition(":")
                self._prom["jobs"].labels(model, variant or "unknown", status).inc()

    def taken_back(self, queue: str, n: int) -> None:
        """Messages of ``queue`` (``inferq.<model>.<variant>``) taken back from a dead worker."""
        if self._prom is not None:
            _, model, variant = queue.split(".", 2)
            self._prom["taken_back"].labels(model, variant).inc(n)

    # --- for the heartbeat / inferq status --------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        cutoff = time.time() - WINDOW_S
        models: dict[str, Any] = {}
        with self._lock:
            for key, recent in self._recent.items():
                while recent and recent[0][0] < cutoff:
                    recent.popleft()
                if not recent:
                    continue
                arr = np.array([row[1:] for row in recent])
                span = max(1.0, min(WINDOW_S, time.time() - recent[0][0]))
                pcts = np.percentile(arr, [50, 95, 99], axis=0)  # rows: percentile; cols: measure
                models[key] = {"jobs_s": len(recent) / span}
                for col, measure in enumerate(("queue", "processing", "compute")):
                    for row, p in enumerate(("p50", "p95", "p99")):
                        models[key][f"{measure}_{p}_ms"] = float(pcts[row, col])
            return {
                "succeeded": self.succeeded,
                "failed": self.failed,
                "expired": self.expired,
                "metrics_port": self.port,
                "recent": models,
            }

    # --- prometheus -----------------------------------------------------------------

    def _start(self, port: int, redis_client: Any, address: str) -> dict[str, Any] | None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
        except ImportError:
            log.warning("prometheus_client is not installed: no /metrics (pip install 'inferq[worker]')")
            return None
        reg = CollectorRegistry()
        labels = ("model", "variant")

        def hist(name: str, doc: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Any:
            return Histogram(name, doc, labels, registry=reg, buckets=buckets)

        def per_job(name: str, doc: str) -> CountedHistogram:
            h = CountedHistogram(name, doc, LATENCY_BUCKETS)
            reg.register(h)
            return h

        prom = {
            "queue": per_job("inferq_queue_seconds", "Time from enqueue to a worker receiving the job"),
            "batch_wait": per_job(
                "inferq_batch_wait_seconds", "Time a received job waited for its batch to start"
            ),
            "compute": hist("inferq_compute_seconds", "Model time per batch"),
            "processing": per_job("inferq_processing_seconds", "Time from receipt to result ready, per job"),
            "batch_size": hist("inferq_batch_size", "Jobs per model call", BATCH_BUCKETS),
            "jobs": Counter("inferq_jobs", "Jobs finished by this worker", (*labels, "status"), registry=reg),
            "taken_back": Counter(
                "inferq_messages_taken_back",
                "Messages this worker put back on their queue after their worker's lease lapsed",
                labels,
                registry=reg,
            ),
        }
        if redis_client is not None:
            reg.register(_CacheCollector(redis_client))
        try:
            server, _ = start_http_server(port, addr=address, registry=reg)
        except OSError as exc:
            try:
                server, _ = start_http_server(0, addr=address, registry=reg)  # the documented fallback
            except OSError as again:  # not the port: the address itself
                raise ConfigError(f"cannot serve /metrics on {address}: {again.strerror or again}") from None
            log.warning(
                "metrics port %d on %s is taken (%s): serving /metrics on port %d instead "
                "(inferq status shows it; give each worker its own --metrics-port)",
                port,
                address,
                exc.strerror or exc,
                server.server_port,
            )
        self.port = int(server.server_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", address, self.port)
        return prom


class CountedHistogram:
    """A per-job histogram (labels model, variant) that takes a value with a count: the
    jobs of one message share their timing, so a batch is one ``observe`` per message,
    not one per job. Exported as a Prometheus histogram like ``prometheus_client``'s."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.buckets = buckets
        self._lock = threading.Lock()
        #: labels -> (count per bucket, the last one +Inf, sum)
        self._data: dict[tuple[str, str], tuple[list[float], list[float]]] = {}

    def observe(self, labels: tuple[str, str], value: float, count: int = 1) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            data = self._data.get(labels)
            if data is None:
                data = self._data[labels] = ([0.0] * (len(self.buckets) + 1), [0.0])
            data[0][i] += count
            data[1][0] += value * count

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.doc, labels=("model", "variant"))
        with self._lock:
            snapshot = {k: (list(c), s[0]) for k, (c, s) in self._data.items()}
        for labels, (counts, total) in sorted(snapshot.items()):
            cumulative = list(itertools.accumulate(counts))
            bounds = [repr(float(b)) for b in self.buckets] + ["+Inf"]
            family.add_metric(list(labels), list(zip(bounds, cumulative, strict=True)), total)
        yield family


def end_status(outcome: Outcome) -> str:
    """A job's end as the ``status`` label: ``expired`` (past its deadline), else ``failure``."""
    return "expired" if isinstance(outcome.error, Expired) else "failure"


class _CacheCollector:
    """Cache hit/miss counters that producers keep in Redis (``HINCRBY`` in their Lua call),
    taken at each scrape: every count is exported by the one worker whose scrape took it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._totals: dict[tuple[str, str, str], float] = defaultdict(float)
        self._lock = threading.Lock()

    def take(self) -> None:
        """Move the counts gathered in Redis since the last take into this worker's totals."""
        try:
            pipe = self.client.pipeline(transaction=True)  # read and clear as one step
            pipe.hgetall(CACHE_STATS_KEY)
            pipe.delete(CACHE_STATS_KEY)
            raw, _ = pipe.execute()
        except Exception as exc:  # Redis away: the counts wait there for the next scrape
            log.debug("could not take the cache counters: %s", exc)
            return
        with self._lock:
            for field, value in raw.items():
                model, variant, kind = field.decode(errors="replace").rsplit(":", 2)
                self._totals[(model, variant, kind)] += float(value)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        hits = CounterMetricFamily(
            "inferq_cache_hits", "Submits served from the cache", labels=("model", "variant")
        )
        misses = CounterMetricFamily(
            "inferq_cache_misses", "Submits that were enqueued", labels=("model", "variant")
        )
        self.take()
        with self._lock:
            totals = dict(self._totals)
        for (model, variant, kind), value in sorted(totals.items()):
            (hits if kind == "hit" else misses).add_metric([model, variant], value)
        yield hits
        yield misses
