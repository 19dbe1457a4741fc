"""What inferq costs per input outside the model, for bulk submissions (issue 18, item 1).

    .venv/bin/python benchmarks/bulk_overhead.py [--inputs 30000] [--chunk 256] [--models-dir models] [--gc-freeze] [--perf FILE]

One run on one machine: a private redis-server, one worker process (digits fp32, one
thread, started and warmed up first), then ``submit_many`` of ``--inputs`` unique
inputs in messages of ``--chunk`` and ``wait_all``. Reported:

- end to end: inputs / (first submit -> last result in the client's hands);
- model time: the runtime's own compute time, summed over the batches the worker ran
  (each result's ``timing.compute_ms`` is its batch's; a batch is counted once);
- outside the model: (end-to-end time - model time) / inputs, in µs;
- raw LiteRT: the same ``.tflite`` in this process, one thread, at fixed batch sizes
  (before the worker starts), and inferq's end to end as a fraction of the best;
- CPU per input of the client (this process), the worker (its process tree) and
  ``redis-server`` over the same stretch (``/proc/<pid>/stat``), and outside the model
  by CPU: (their sum - model time) / inputs. On a shared machine wall-clock figures
  move with the neighbours' load; CPU per input moves much less;
- the client's garbage collector over the same stretch (``gc.callbacks``): its time,
  and how many full collections (each walks everything the process holds);
- the machine over the same stretch (``/proc/stat``): how busy it was (near 100%: the
  rate is set by CPU per input alone) and its CPU per input, neighbours included;
- with ``--perf FILE``: ``perf record -a`` over the run, its busy samples summed per
  role (client, worker, redis, other) and library: what the model's code ran, apart
  from the wall time its thread was stamped with while descheduled.

``--infer-many`` sends and waits with ``Client.infer_many`` (stacked outputs, no ``Job``
or ``Result`` per input) instead of ``submit_many`` and ``wait_all``.

``--inputs 120000`` is a submission whose results mostly arrive before its
``wait_all`` begins: what the client keeps meanwhile, and how, shows there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.client_cpu import cpu_s  # noqa: E402
from benchmarks.cpu_window import MachineClock, PerfWindow, threads_of  # noqa: E402
from benchmarks.redis_commands import process_tree  # noqa: E402
from benchmarks.system_bench import cpu_name, inputs, spawn, stop, worker_cmd  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.bulk import BulkResult  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402
from workers.models.registry import Registry  # noqa: E402
from workers.models.runtimes.litert import LiteRTRuntime  # noqa: E402

RAW_SIZES = (1, 8, 16, 32, 64, 128, 256)


def raw_litert(models_dir: Path, threads: int, budget_s: float = 0.5) -> dict[int, float]:
    """Inferences/s of the bare runtime at fixed batch sizes (first call untimed)."""
    rt = LiteRTRuntime(Registry(models_dir).get("digits", "fp32"), threads=threads)
    x = np.random.default_rng(0).random((max(RAW_SIZES), 28, 28, 1), dtype=np.float32)
    out: dict[int, float] = {}
    for n in RAW_SIZES:
        batch = {"image": x[:n]}
        rt.predict(batch)
        calls, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < budget_s or calls < 3:
            rt.predict(batch)
            calls += 1
        out[n] = calls * n / elapsed
    return out


def through_inferq(
    settings: Settings,
    xs: np.ndarray,
    chunk: int,
    logdir: Path,
    redis_pid: int | None,
    gc_freeze: bool = False,
    perf: PerfWindow | None = None,
    infer_many: bool = False,
) -> dict[str, Any]:
    w = spawn(worker_cmd("digits:fp32", "--threads", "1"), settings.env(), logdir / "bulk_overhead.log")
    try:
        with Client(settings) as c:
            wait_for_workers(c, ["digits:fp32"], timeout=120)
            warm = np.random.default_rng(7).random((512, 28, 28, 1), dtype=np.float32)
            c.wait_all(c.submit_many("digits", warm, chunk_size=chunk, no_cache=True), timeout=120)
            wpids = process_tree(w.pid)
            rpids = {redis_pid} if redis_pid else set()
            if gc_freeze:  # what the README advises a bulk producer: start-up heap out of sight
                gc.collect()
                gc.freeze()
            if perf is not None:
                perf.start()
            machine = MachineClock()
            cpu0, w0, r0 = time.process_time(), cpu_s(wpids), cpu_s(rpids)
            gc_clock = CollectorClock()
            gc.callbacks.append(gc_clock)
            machine.start()
            t0 = time.perf_counter()
            try:
                if infer_many:
                    got, submitted = stacked_run(c, xs, chunk), float("nan")  # one call: no sent time
                else:
                    jobs = c.submit_many("digits", xs, variant="fp32", chunk_size=chunk)
                    submitted = time.perf_counter() - t0
                    results = c.wait_all(jobs, timeout=900)
                e2e = time.perf_counter() - t0
            finally:
                machine.stop()
                gc.callbacks.remove(gc_clock)
                if perf is not None:
                    perf.stop()
            roles = {t: "client" for t in threads_of({os.getpid()})}
            roles.update({t: "worker" for t in threads_of(wpids)})
            roles.update({t: "redis" for t in threads_of(rpids)})
            cpu = {
                "client": time.process_time() - cpu0,
                "worker": cpu_s(wpids) - w0,
                "redis": cpu_s(rpids) - r0,
            }
    finally:
        stop(w)
    batches: dict[float, float] = {}
    if infer_many:
        assert got.ok, f"{len(got.errors)} errors, first: {next(iter(got.errors.values()))!r}"
        # A batch's rows share its compute time (a float no other batch repeats).
        batches = {float(ms): float(ms) / 1e3 for ms in np.unique(got.timing["compute_ms"])}
        e2e_ms = sorted(got.timing["end_to_end_ms"].tolist())
    else:
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
        for r in results:
            t = r.timing  # type: ignore[union-attr]
            batches[t.started_at] = t.compute_ms / 1e3
        e2e_ms = sorted(r.timing.end_to_end_ms or 0.0 for r in results)  # type: ignore[union-attr]
    model_s = sum(batches.values())
    n = len(xs)
    cpu_total = sum(cpu.values())
    profile = perf.report(roles) if perf is not None else []
    return {
        **{f"cpu_{k}_us_per_input": v / n * 1e6 for k, v in cpu.items()},
        "cpu_total_us_per_input": cpu_total / n * 1e6,
        "outside_cpu_us_per_input": (cpu_total - model_s) / n * 1e6,
        "inputs": n,
        "e2e_s": e2e,
        "submit_s": submitted,
        "inferences_s": n / e2e,
        "model_s": model_s,
        "model_inferences_s": n / model_s,
        "outside_us_per_input": (e2e - model_s) / n * 1e6,
        "batches": len(batches),
        "mean_batch": n / len(batches),
        "e2e_p50_ms": float(np.percentile(e2e_ms, 50)),
        "e2e_p99_ms": float(np.percentile(e2e_ms, 99)),
        "client_gc_ms": gc_clock.total_s * 1e3,
        "client_full_collections": gc_clock.full,
        "machine_busy_share": machine.busy_share,
        "machine_cpu_us_per_input": machine.busy_s / n * 1e6,
        "profile": [{"share": share, "role": role, "object": dso} for share, role, dso in profile],
    }


def stacked_run(c: Client, xs: np.ndarray, chunk: int) -> BulkResult:
    """``infer_many`` of ``xs``, as a caller holding an array of inputs would send them."""
    return c.infer_many("digits", xs, variant="fp32", chunk_size=chunk, timeout=900)


class CollectorClock:
    """A ``gc.callbacks`` hook: how long the client's garbage collector ran, and how many
    full (generation 2) collections, while it is installed."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.full = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.total_s += time.perf_counter() - self._began
        self.full += info["generation"] == 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=30_000)
    ap.add_argument("--chunk", type=int, default=256, help="inputs per message (submit_many's chunk_size)")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() in the client before the run, as the README advises a bulk producer",
    )
    ap.add_argument(
        "--perf",
        type=Path,
        metavar="FILE",
        help="record the whole machine with perf over the run into FILE and report its CPU per process role and library",
    )
    ap.add_argument(
        "--infer-many",
        action="store_true",
        help="send and wait with Client.infer_many (stacked outputs) instead of submit_many + wait_all",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    perf = PerfWindow(args.perf) if args.perf else None
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    raw = raw_litert(args.models_dir, threads=1)
    best = max(raw, key=lambda b: raw[b])
    with LocalRedis() as rs:
        settings = Settings(broker_url=rs.url, models_dir=args.models_dir, log_level="WARNING")
        xs = inputs(args.models_dir, args.inputs, time.time() % 1000)
        r = through_inferq(
            settings,
            xs,
            args.chunk,
            logdir,
            rs.proc.pid if rs.proc else None,
            args.gc_freeze,
            perf,
            args.infer_many,
        )
    out = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "chunk": args.chunk,
        "gc_freeze": args.gc_freeze,
        "infer_many": args.infer_many,
        "raw": raw,
        **r,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    frozen = "; the client's start-up heap frozen (gc.freeze)" if args.gc_freeze else ""
    how = "infer_many" if args.infer_many else "submit_many + wait_all"
    print(
        f"machine: {out['machine']}; digits fp32, 1 thread, {r['inputs']} inputs, {args.chunk} per message, "
        f"{how}{frozen}"
    )
    print("raw LiteRT inferences/s: " + ", ".join(f"b={b}: {v:,.0f}" for b, v in raw.items()))
    sent = "" if args.infer_many else f"; submit_many {r['submit_s']:.2f} s"
    print(
        f"inferq end to end: {r['inferences_s']:,.0f} inferences/s ({r['e2e_s']:.2f} s{sent}) = "
        f"{r['inferences_s'] / raw[best]:.2f}x raw best (b={best}: {raw[best]:,.0f}/s)"
    )
    print(
        f"model time: {r['model_s']:.2f} s over {r['batches']} batches (mean {r['mean_batch']:.1f}), "
        f"{r['model_inferences_s']:,.0f} inferences/s while computing"
    )
    print(f"outside the model: {r['outside_us_per_input']:.1f} µs per input (wall)")
    print(
        f"CPU per input: client {r['cpu_client_us_per_input']:.1f} µs, worker {r['cpu_worker_us_per_input']:.1f} µs, "
        f"redis {r['cpu_redis_us_per_input']:.1f} µs; outside the model {r['outside_cpu_us_per_input']:.1f} µs"
    )
    print(f"end-to-end latency per job: p50 {r['e2e_p50_ms']:.0f} ms, p99 {r['e2e_p99_ms']:.0f} ms")
    print(
        f"the client's garbage collector: {r['client_gc_ms']:.0f} ms, "
        f"{r['client_full_collections']} full collection(s)"
    )
    print(
        f"the machine: busy {r['machine_busy_share']:.0%} of the run ({os.cpu_count()} cores), "
        f"{r['machine_cpu_us_per_input']:.1f} µs of CPU per input by everything on it"
    )
    for row in r["profile"]:
        print(f"  perf, of the busy samples: {row['share']:5.1f}% {row['role']:<6} {row['object']}")


if __name__ == "__main__":
    main()
