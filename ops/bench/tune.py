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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.managed import WorkerConfig, ensure_queue_is_ours, managed_worker
from ops.bench.run import BenchConfig, run_bench
from producers.client import Client
from tasks.errors import ConfigError
from tasks.settings import Settings


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


def tune(
    client: Client,
    model: str,
    grid: Grid,
    p99_budget_ms: float,
    pool: np.ndarray,
    *,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Measure every configuration of ``grid``; recommend the fastest within the budget.

    ``stop`` set (Ctrl-C) cuts the point being measured short, stops the worker and
    ends the tune: the result is ``partial``, and a point cut short is shown but never
    recommended (its figures cover less than the asked duration).
    """
    ensure_queue_is_ours(client, model)
    stop = stop or threading.Event()
    configs = grid.configs()
    points: list[dict[str, Any]] = []
    try:
        for cfg in configs:
            with managed_worker(client, model, cfg, stop=stop):
                for c in grid.concurrencies:
                    bc = BenchConfig(
                        model=model,
                        variant=cfg.variant,
                        concurrency=c,
                        duration_s=grid.duration_s,
                        label=cfg.label(),
                    )
                    points.append(_point(cfg, c, run_bench(client, bc, pool, stop=stop).report()))
                    if stop.is_set():
                        break
            if stop.is_set():
                break
    except KeyboardInterrupt:  # stopped while its worker started, or a second Ctrl-C
        stop.set()
    ok = [p for p in points if p["p99_ms"] <= p99_budget_ms and p["errors"] == 0 and not p["stopped_early"]]
    best = max(ok, key=lambda p: p["throughput"]) if ok else None
    return {
        "model": model,
        "p99_budget_ms": p99_budget_ms,
        "partial": stop.is_set(),
        "configurations": len(configs),
        "points": points,
        "recommended": best,
    }


def _point(cfg: WorkerConfig, concurrency: int, rep: dict[str, Any]) -> dict[str, Any]:
    return {
        "variant": cfg.variant,
        "max_batch_size": cfg.max_batch_size,
        "max_wait_ms": cfg.max_wait_ms,
        "threads": cfg.threads,
        "concurrency": concurrency,
        "throughput": rep["throughput"],
        "p50_ms": rep["latency_ms"]["end_to_end"]["p50"],
        "p99_ms": rep["latency_ms"]["end_to_end"]["p99"],
        "mean_batch": rep["mean_batch"],
        "errors": rep["errors"],
        "stopped_early": rep["stopped_early"],
        "measured_s": rep["measured_s"],
    }


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
        if p.get("stopped_early"):
            mark = f"  (stopped early: {p['measured_s']:.1f} s measured)"
        else:
            mark = " <- recommended" if p is best else ("" if within else "  (over budget)")
        lines.append(
            f"{p['variant']:<11} {p['max_batch_size']:>5} {p['max_wait_ms']:>7g} {p['threads']:>3} {p['concurrency']:>4} "
            f"{p['throughput']:>8.1f} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f} {p['mean_batch']:>10.1f}{mark}"
        )
    if result.get("partial"):
        done = len(
            {(p["variant"], p["max_batch_size"], p["max_wait_ms"], p["threads"]) for p in result["points"]}
        )
        lines.append(
            f"partial: stopped (Ctrl-C) with {done} of {result['configurations']} configurations measured "
            "(the last, at least in part); the rest were not"
            + ("; the recommendation is among the points measured in full" if best is not None else "")
        )
    full = [p for p in result["points"] if not p.get("stopped_early")]
    if best is None and result.get("partial") and not full:
        lines.append("no recommendation: nothing was measured in full before the stop")
    elif best is None:
        among = " (of those measured)" if result.get("partial") else ""
        lines.append(f"no configuration kept p99 within {result['p99_budget_ms']:g} ms{among}")
    else:
        lines.append(
            f"recommended: {best['variant']}, max_batch_size {best['max_batch_size']}, max_wait_ms {best['max_wait_ms']:g}, "
            f"INFERQ_THREADS={best['threads']}: {best['throughput']:.1f} jobs/s at p99 {best['p99_ms']:.2f} ms "
            f"(closed loop, {best['concurrency']} in flight)"
        )
    return "\n".join(lines)


def auto_plans(settings: Settings, model: str, variants: list[str]) -> dict[str, Any]:
    """What ``inferq worker --concurrency auto`` would run for each variant here, and why.

    Measured after tune's own workers stopped, in a child process, as a worker does.
    """
    from workers.boot.auto_plan import choose_plan
    from workers.boot.calibrate import calibrate_in_child
    from workers.boot.cores import available_cores

    cores = available_cores()
    costs = calibrate_in_child(settings, [f"{model}:{v}" for v in variants], cores)
    return {
        "cores": cores,
        "plans": {c.key: choose_plan(cores, [c]).to_dict() for c in costs},
        "costs": {c.key: c.to_dict() for c in costs},
    }


def auto_lines(result: dict[str, Any]) -> list[str]:
    """``--concurrency auto``'s choice for each variant beside what tune measured."""
    auto = result.get("auto")
    if not auto:
        return []
    best = result["recommended"]
    lines = [
        "",
        f"--concurrency auto on this machine ({auto['cores']:g} cores) would run, from each variant's "
        "measured cost alone:",
    ]
    for key, plan in auto["plans"].items():
        batch = "its own batch size" if plan["max_batch_size"] is None else f"batch {plan['max_batch_size']}"
        lines.append(f"  {key}: {plan['processes']} process(es) x {plan['threads']} thread(s), {batch}")
        lines.append(f"    why: {plan['reason']}")
    if best is not None:
        key = f"{result['model']}:{best['variant']}"
        plan = auto["plans"].get(key)
        lines.append(
            f"tune measured, for one worker process: {key} best at batch {best['max_batch_size']}, "
            f"{best['threads']} thread(s)"
            + (
                ""
                if plan is None or plan["max_batch_size"] in (None, best["max_batch_size"])
                else f" (auto would pick batch {plan['max_batch_size']})"
            )
        )
    lines.append(
        "auto guesses from the model's cost without Redis, load or a latency budget; tune measured "
        "them. --apply writes tune's batch size into meta.json, and auto then keeps it."
    )
    return lines
