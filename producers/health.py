"""What readiness probes and the gateway's stats report, from workers' heartbeats (no I/O)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from producers.status import Reading
from tasks import constants as C
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists
from tasks.schema import ModelInfo
from tasks.wire import WorkerBeat


def live_beats(raw: dict[bytes, bytes], now: float | None = None) -> list[WorkerBeat]:
    """The heartbeats of workers seen within three beats."""
    now = time.time() if now is None else now
    return [b for b in (WorkerBeat.parse(v) for v in raw.values()) if b is not None and b.alive(now)]


def readiness(broker_ok: bool, results_ok: bool, beats: list[WorkerBeat]) -> dict[str, Any]:
    """``ready``: both Redis answer and at least one live worker serves a model."""
    models = sorted({m for b in beats for m in b.models})
    return {
        "broker": broker_ok,
        "results": results_ok,
        "workers": sorted(b.hostname for b in beats),
        "models": models,
        "ready": bool(broker_ok and results_ok and models),
    }


#: The percentiles each worker's heartbeat carries (``workers/serving/metrics.py``).
PERCENTILES = ("p50", "p95", "p99")


def model_stats(key: str, depth: int, beats: list[WorkerBeat]) -> dict[str, Any]:
    """Queue depth, workers and recent latencies of one model variant over its workers.

    Each worker reports percentiles over its last minute; across workers a percentile
    is the worst worker's (percentiles cannot be averaged), throughput the sum.
    """
    model, _, variant = key.partition(":")
    recent = [b.stats.get("recent", {}).get(key) for b in beats]
    recent = [r for r in recent if isinstance(r, dict)]
    out: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "depth": depth,
        "workers": sum(key in b.models for b in beats),
        "jobs_s": float(sum(r.get("jobs_s", 0.0) for r in recent)),
    }
    for measure in ("queue", "compute", "processing"):
        out[f"{measure}_ms"] = {p: _worst([r.get(f"{measure}_{p}_ms") for r in recent]) for p in PERCENTILES}
    return out


def _worst(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
    return max(nums) if nums else None


def read_model_stats(info: ModelInfo) -> Reading[dict[str, Any]]:
    """``model_stats`` of a model variant, read in two round trips (``producers/status.py``'s
    drivers run it on either client): its queue lists' lengths, then the heartbeats."""

    def depths(results: Any, broker: Any) -> Any:
        pipe = broker.pipeline(transaction=False)
        for lst in queue_lists(queue_name(info.name, info.variant)):
            pipe.llen(lst)
        return pipe.execute()

    depth = int(sum((yield depths)))
    raw = yield lambda results, broker: results.hgetall(C.WORKERS_KEY)
    return model_stats(info.key, depth, live_beats(raw))
