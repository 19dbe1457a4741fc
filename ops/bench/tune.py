"""``inferq tune``: find the configuration with the most throughput within a p99 budget.

For each model variant and each worker configuration in the grid (``max_batch_size``,
``max_wait_ms``, threads), it starts a worker, runs closed-loop loads at a few
concurrencies with ``inferq bench``'s machinery, and keeps every point. The
recommendation is the point with the highest throughput whose end-to-end p99 stays
within the budget (and had no errors); ``--apply`` writes its batching settings into
the variant's ``meta.json`` (workers read them at start-up).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.managed import WorkerConfig, ensure_queue_is_ours, managed_worker
from ops.bench.run import BenchConfig, run_bench
from producers.client import Client
from tasks.errors import ConfigError


@dataclass(frozen=True)
class Grid:
    variants: list[str]
    batch_sizes: list[int]
    waits_ms: list[float]
    threads: list[int]
    concurrencies: list[int]
    duration_s: float

    def configs(self) -> list[WorkerConfig]:
        out: list[WorkerConfig] = []
        for v, b, th in itertools.product(self.variants, self.batch_sizes, self.threads):
            waits = [0.0] if b == 1 else self.waits_ms  # no wait without batching
            out.extend(WorkerConfig(v, max_batch_size=b, max_wait_ms=w, threads=th) for w in waits)
        return out


def tune(client: Client, model: str, grid: Grid, p99_budget_ms: float, pool: np.ndarray) -> dict[str, Any]:
    ensure_queue_is_ours(client, model)
    points: list[dict[str, Any]] = []
    for cfg in grid.configs():
        with managed_worker(client, model, cfg):
            for c in grid.concurrencies:
                bc = BenchConfig(
                    model=model,
                    variant=cfg.variant,
                    concurrency=c,
                    duration_s=grid.duration_s,
                    label=cfg.label(),
                )
                rep = run_bench(client, bc, pool).report()
                points.append(
                    {
                        "variant": cfg.variant,
                        "max_batch_size": cfg.max_batch_size,
                        "max_wait_ms": cfg.max_wait_ms,
                        "threads": cfg.threads,
                        "concurrency": c,
                        "throughput": rep["throughput"],
                        "p50_ms": rep["latency_ms"]["end_to_end"]["p50"],
                        "p99_ms": rep["latency_ms"]["end_to_end"]["p99"],
                        "mean_batch": rep["mean_batch"],
                        "errors": rep["errors"],
                    }
                )
    ok = [p for p in points if p["p99_ms"] <= p99_budget_ms and p["errors"] == 0]
    best = max(ok, key=lambda p: p["throughput"]) if ok else None
    return {"model": model, "p99_budget_ms": p99_budget_ms, "points": points, "recommended": best}


def apply(models_dir: Path, model: str, best: dict[str, Any]) -> Path:
    """Write the recommended batching settings into the variant's meta.json."""
    meta_path: Path = models_dir / model / str(best["variant"]) / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(f"cannot apply: {meta_path} does not exist (is the models folder shared here?)")
    meta = json.loads(meta_path.read_text())
    meta["max_batch_size"] = int(best["max_batch_size"])
    meta["max_wait_ms"] = float(best["max_wait_ms"])
    meta["tuned"] = {k: best[k] for k in ("threads", "concurrency", "throughput", "p99_ms")}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta_path


def table(result: dict[str, Any]) -> str:
    best = result["recommended"]
    head = f"{'variant':<11} {'batch':>5} {'wait ms':>7} {'thr':>3} {'conc':>4} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10}"
    lines = [head, "-" * len(head)]
    for p in result["points"]:
        within = p["p99_ms"] <= result["p99_budget_ms"] and p["errors"] == 0
        mark = " <- recommended" if p is best else ("" if within else "  (over budget)")
        lines.append(
            f"{p['variant']:<11} {p['max_batch_size']:>5} {p['max_wait_ms']:>7g} {p['threads']:>3} {p['concurrency']:>4} "
            f"{p['throughput']:>8.1f} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f} {p['mean_batch']:>10.1f}{mark}"
        )
    if best is None:
        lines.append(f"no configuration kept p99 within {result['p99_budget_ms']:g} ms")
    else:
        lines.append(
            f"recommended: {best['variant']}, max_batch_size {best['max_batch_size']}, max_wait_ms {best['max_wait_ms']:g}, "
            f"INFERQ_THREADS={best['threads']}: {best['throughput']:.1f} jobs/s at p99 {best['p99_ms']:.2f} ms "
            f"(closed loop, {best['concurrency']} in flight)"
        )
    return "\n".join(lines)
