"""Batching figures for docs/benchmarks.md (issue 3), each part in one run.

    .venv/bin/python benchmarks/batching_bench.py [--part mobilenet|latency|all]

mobilenet: rounds (``--rounds``) of raw in-process LiteRT throughput of mobilenet_v2
fp32 at batch sizes 1-8 (the same file, the same thread count, distinct inputs per
call; the best rate on one input repeated is printed beside it), then the same model
end to end through inferq, one worker process, twice: with the queue pre-filled (the
worker's rate by its own stamps) and sent live to a ready worker (the rate the client
saw); each from the first result to the last and against two raw baselines of its own
round: the best of the four sizes, and that size timed again just before and just
after the inferq runs ("bracketed": free of the best-of-four's upward pick, and of
drift across the round).

latency: digits fp32 under open-loop Poisson load at half of the unbatched worker's
saturation rate, batching on vs off: p50/p99 of queue, batch wait, compute and
end to end (from each job's intended send time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.client_cpu import cpu_s  # noqa: E402
from benchmarks.redis_commands import process_tree  # noqa: E402
from benchmarks.system_bench import cpu_name, spawn, stop, worker_cmd  # noqa: E402
from ops.bench.loadgen import open_loop  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.stats import summarize  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402
from workers.models.registry import Registry  # noqa: E402
from workers.models.runtimes.litert import LiteRTRuntime  # noqa: E402


def raw_rates(rt: LiteRTRuntime, rng: np.random.Generator, distinct: bool = True) -> dict[int, float]:
    """Inferences/s of the bare runtime at each fixed batch size (first call untimed).

    ``distinct``: every call gets inputs of its own (48 inputs, 29 MB), as a server's
    model does; the same input over and over stays in the CPU's caches, which flatters
    the bare runtime by a few percent (both are printed)."""
    return {b: raw_rate_at(rt, rng, b, distinct=distinct) for b in (1, 2, 4, 8)}


def raw_rate_at(
    rt: LiteRTRuntime, rng: np.random.Generator, b: int, n: int = 48, distinct: bool = True
) -> float:
    """Inferences/s of the bare runtime at batch ``b`` over about ``n`` inputs (first call untimed)."""
    reps = max(2, n // b)
    xs = rng.uniform(-1, 1, (reps if distinct else 1, b, 224, 224, 3)).astype(np.float32)
    rt.predict({"image": xs[0]})
    t0 = time.perf_counter()
    for i in range(reps):
        rt.predict({"image": xs[i % len(xs)]})
    return reps * b / (time.perf_counter() - t0)


def through_inferq(
    settings: Settings,
    threads: int,
    xs: np.ndarray,
    logdir: Path,
    max_batch: int | None,
    *,
    prefilled: bool,
    redis_pid: int | None = None,
) -> tuple[float, float, dict[str, float]]:
    """``xs`` through one worker: (results/s, mean batch, ms of CPU per input by process),
    the rate from the first result to the last (a steady stream; the worker's start-up
    is not counted).

    ``prefilled``: every input queued before the worker starts, rate by the worker's
    stamps (the worker alone: the client only waits). Otherwise the worker is ready
    first and the client sends while it drains, rate as the client saw the results
    (client, Redis and worker share the machine); CPU is counted from the first send."""
    n = len(xs)
    extra = ["--threads", str(threads)] + (["--max-batch-size", str(max_batch)] if max_batch else [])
    w = None
    cpu: dict[str, float] = {}
    try:
        with Client(settings) as c:
            if prefilled:
                jobs = c.submit_many("mobilenet_v2", xs, variant="fp32", chunk_size=8, no_cache=True)
            w = spawn(worker_cmd("mobilenet_v2:fp32", *extra), settings.env(), logdir / "mobilenet.log")
            if not prefilled:
                wait_for_workers(c, ["mobilenet_v2:fp32"], timeout=120)
                pids = {"worker": process_tree(w.pid), "redis": {redis_pid} if redis_pid else set()}
                before = {k: cpu_s(v) for k, v in pids.items()} | {"client": time.process_time()}
                jobs = c.submit_many("mobilenet_v2", xs, variant="fp32", chunk_size=8, no_cache=True)
            results = c.wait_all(jobs, timeout=900)
            if not prefilled:
                after = {k: cpu_s(v) for k, v in pids.items()} | {"client": time.process_time()}
                cpu = {k: (after[k] - before[k]) / n * 1e3 for k in after}
    finally:
        if w is not None:
            stop(w)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == n, [r for r in results if isinstance(r, Exception)][:3]
    batch = float(np.mean([r.timing.batch_size for r in ok]))
    if prefilled:
        finished = sorted({r.timing.finished_at for r in ok})
        first_batch = sum(1 for r in ok if r.timing.finished_at == finished[0])
        return (n - first_batch) / (finished[-1] - finished[0]), batch, cpu
    seen = sorted(r.timing.enqueued_at + (r.timing.end_to_end_ms or 0) / 1e3 for r in ok)
    return (n - 1) / (seen[-1] - seen[0]), batch, cpu


def mobilenet(
    settings: Settings,
    threads: int,
    n: int,
    logdir: Path,
    max_batch: int | None = None,
    rounds: int = 3,
    redis_pid: int | None = None,
) -> None:
    """Rounds of (raw LiteRT at batch 1, 2, 4, 8; then ``n`` inputs through inferq): each
    round's ratio is against the best raw rate of *that* round, so the machine's drift
    between rounds (this machine is shared) does not enter a ratio.

    Two raw baselines per round. "Raw best" is the fastest of the four sizes: the
    largest of four noisy figures, so noise alone pushes it up (the winner's curse) and
    a ratio against it down. "Bracketed" times the chosen size again, on fresh inputs,
    just before the inferq runs and just after them (``2 * n`` inputs each, as long as
    the inferq runs take), and takes the mean: a baseline free of the selection, and of
    drift across the round as long as it is steady."""
    entry = Registry(settings.models_dir).get("mobilenet_v2", "fp32")
    rt = LiteRTRuntime(entry, threads=threads)
    rng = np.random.default_rng(0)
    print(f"\nmobilenet_v2 fp32, {threads} thread(s), {n} jobs per run, {rounds} rounds")
    print("| round | raw b=1 / 2 / 4 / 8 (/s) | raw best | raw best, one input again and again | bracketed raw at that size: before / after (mean) | queue pre-filled: worker's rate (x raw best; x bracketed) | sent live: rate the client saw (x raw best; x bracketed) | live, CPU ms per input: client / worker / redis | mean batch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    drains, lives, drains_b, lives_b = [], [], [], []
    for i in range(rounds):
        same = max(raw_rates(rt, rng, distinct=False).values())
        raw = raw_rates(rt, rng)
        best_b = max(raw, key=lambda b: raw[b])
        xs = rng.uniform(-1, 1, (n, 224, 224, 3)).astype(np.float32)
        pre = raw_rate_at(rt, rng, best_b, 2 * n)
        drain, batch, _ = through_inferq(settings, threads, xs, logdir, max_batch, prefilled=True)
        live, _, cpu = through_inferq(
            settings, threads, xs + 0.5, logdir, max_batch, prefilled=False, redis_pid=redis_pid
        )
        post = raw_rate_at(rt, rng, best_b, 2 * n)
        bracket = (pre + post) / 2
        drains.append(drain / raw[best_b])
        lives.append(live / raw[best_b])
        drains_b.append(drain / bracket)
        lives_b.append(live / bracket)
        print(
            f"| {i + 1} | {' / '.join(f'{v:.1f}' for v in raw.values())} | b={best_b}: {raw[best_b]:.1f} "
            f"| {same:.1f} | {pre:.1f} / {post:.1f} ({bracket:.1f}) "
            f"| {drain:.1f} ({drains[-1]:.2f}x; {drains_b[-1]:.2f}x) | {live:.1f} ({lives[-1]:.2f}x; {lives_b[-1]:.2f}x) "
            f"| {cpu['client']:.2f} / {cpu['worker']:.2f} / {cpu['redis']:.2f} | {batch:.1f} |"
        )
    print(
        f"median over rounds: pre-filled {np.median(drains):.2f}x raw best, sent live {np.median(lives):.2f}x; "
        f"against bracketed raw: pre-filled {np.median(drains_b):.2f}x, sent live {np.median(lives_b):.2f}x"
    )


def latency(settings: Settings, duration: float, logdir: Path) -> None:
    x0 = np.load(settings.models_dir / "digits" / "data" / "heldout_x.npy")
    rng = np.random.default_rng(7)

    def make(i: int) -> np.ndarray:
        return (x0[i % len(x0)] + rng.uniform(0, 1e-3, (28, 28, 1))).astype(np.float32)

    # Saturation of the unbatched worker, measured the same way as system_bench.
    with Client(settings) as c:
        xs = np.stack([make(i) for i in range(1500)])
        jobs = c.submit_many("digits", xs, variant="fp32", chunk_size=1)
        w = spawn(worker_cmd("digits:fp32", "--max-batch-size", "1"), settings.env(), logdir / "sat.log")
        try:
            res = c.wait_all(jobs, timeout=300)
        finally:
            stop(w)
    ok = [r for r in res if not isinstance(r, Exception)]
    sat = len(ok) / (max(r.timing.finished_at for r in ok) - min(r.timing.received_at for r in ok))
    rate = sat / 2
    print(
        f"\ndigits fp32: unbatched saturation {sat:.0f} jobs/s; open-loop Poisson load at {rate:.0f} jobs/s for {duration:.0f} s"
    )
    rows: dict[str, dict[str, Any]] = {}
    for name, extra in (("batching off", ["--max-batch-size", "1"]), ("batching on (max 64, 2 ms)", [])):
        w = spawn(worker_cmd("digits:fp32", *extra), settings.env(), logdir / "lat.log")
        try:
            with Client(settings) as c:
                wait_for_workers(c, ["digits:fp32"], timeout=120)
                samples, late = open_loop(
                    c, "digits", make, rate=rate, duration_s=duration, variant="fp32", seed=1
                )
        finally:
            stop(w)
        good = [s for s in samples if not isinstance(s.result, Exception) and s.result is not None]
        t = [s.result.timing for s in good]  # type: ignore[union-attr]
        rows[name] = {
            "queue": summarize(x.queue_ms for x in t),
            "batch wait": summarize(x.batch_wait_ms for x in t),
            "compute": summarize(x.compute_ms for x in t),
            "processing": summarize(x.processing_ms for x in t),
            "end to end (from send)": summarize(x.end_to_end_ms or 0.0 for x in t),
            "end to end (from intended send)": summarize(s.latency_ms or 0.0 for s in good),
            "batch": summarize(x.batch_size for x in t),
            "n": len(good),
            "late": late,
        }
    print("| ms (p50 / p99) | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows))
    for m in (
        "queue",
        "batch wait",
        "compute",
        "processing",
        "end to end (from send)",
        "end to end (from intended send)",
    ):
        print(
            f"| {m} | " + " | ".join(f"{r[m]['p50']:.2f} / {r[m]['p99']:.2f}" for r in rows.values()) + " |"
        )
    print("| mean batch size | " + " | ".join(f"{r['batch']['mean']:.2f}" for r in rows.values()) + " |")
    print("| jobs (late sends) | " + " | ".join(f"{r['n']} ({r['late']})" for r in rows.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["all", "mobilenet", "latency"])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mobilenet-jobs", type=int, default=600)
    ap.add_argument(
        "--mobilenet-max-batch", type=int, help="worker --max-batch-size for mobilenet (default: the model's)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="mobilenet: rounds of raw then inferq")
    ap.add_argument("--duration", type=float, default=15.0)
    args = ap.parse_args()
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores")
    with LocalRedis() as rs:
        settings = Settings(
            broker_url=rs.url, models_dir=args.models_dir, log_level="WARNING", threads=args.threads
        )
        if args.part in ("all", "mobilenet"):
            redis_pid = rs.proc.pid if rs.proc else None
            mobilenet(
                settings,
                args.threads,
                args.mobilenet_jobs,
                logdir,
                args.mobilenet_max_batch,
                args.rounds,
                redis_pid,
            )
        if args.part in ("all", "latency"):
            latency(settings, args.duration, logdir)


if __name__ == "__main__":
    main()
