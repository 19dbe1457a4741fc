"""Ray Serve's side of benchmarks/ray_peer.py; runs in Ray's own venv, not inferq's.

    /work/ray-venv/bin/python benchmarks/ray_peer_serve.py --model M.tflite --inputs X.npy \
        --duration 10 [--inflight 64] [--warmup 2]

Starts a local Ray (no dashboard) and Ray Serve without its HTTP proxy, one replica of
a deployment that runs the same ``.tflite`` through ``ai_edge_litert`` on one thread,
batched by ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)`` (inferq's
worker: batch 32, 2 ms wait), and drives it through its ``DeploymentHandle`` from this
process with ``--inflight`` requests always in flight (asyncio tasks), each a distinct
input made as ray_peer.py makes inferq's. Prints one JSON line: throughput, latency
percentiles, mean batch, and CPU per request of this process (the client: Serve's
router runs here), the replica, and every other Ray process (GCS, raylet, controller,
...), read from /proc over the measured window.

Imports nothing of inferq's (this venv does not have it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_by_group() -> dict[str, dict[int, float]]:
    """CPU seconds so far of this process, Serve's replica, and every other Ray process."""
    groups: dict[str, dict[int, float]] = {
        "client": {os.getpid(): cpu_s(os.getpid())},
        "replica": {},
        "ray_other": {},
    }
    for pid in descendants(os.getpid()):
        group = "replica" if "ServeReplica" in cmdline(pid) else "ray_other"
        groups[group][pid] = cpu_s(pid)
    return groups


def cpu_delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """Seconds of CPU each group used between the two readings (processes alive at the end)."""
    return {g: sum(t - before[g].get(pid, 0.0) for pid, t in after[g].items()) for g in after}


def distinct_input(base: np.ndarray, i: int) -> np.ndarray:
    """The i-th input: a held-out digit with one pixel nudged, so no two are the same (as ray_peer.py)."""
    x = base[i % len(base)].copy()
    x.flat[0] += np.float32((i + 1) * 1e-6)
    return x


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--max-ongoing", type=int, default=128, help="the replica's max_ongoing_requests")
    ap.add_argument(
        "--no-access-log", action="store_true", help="turn off Serve's per-request access log (on by default)"
    )
    args = ap.parse_args()

    import ray
    from ray import serve

    t_start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(proxy_location="Disabled")

    # max_ongoing_requests: Serve's default (5) would cap batches at 5 with 64 in flight.
    logging_config = {"enable_access_log": False} if args.no_access_log else None

    @serve.deployment(num_replicas=1, max_ongoing_requests=args.max_ongoing, logging_config=logging_config)
    class Model:
        def __init__(self, path: str) -> None:
            from ai_edge_litert.interpreter import Interpreter

            self.interp = Interpreter(model_path=path, num_threads=1)
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]["index"]
            self.out = self.interp.get_output_details()[0]["index"]
            self.shape: tuple[int, ...] = tuple(self.interp.get_input_details()[0]["shape"])
            self.batches: list[int] = []

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
        async def predict(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            batch = np.stack(xs)
            if batch.shape != self.shape:  # as inferq's LiteRT runtime: re-plan on a new batch size
                self.interp.resize_tensor_input(self.inp, list(batch.shape), strict=False)
                self.interp.allocate_tensors()
                self.shape = batch.shape
            self.interp.set_tensor(self.inp, batch)
            self.interp.invoke()
            self.batches.append(len(xs))
            return list(self.interp.get_tensor(self.out))

        async def __call__(self, x: np.ndarray) -> np.ndarray:
            return await self.predict(x)

        def batch_stats(self, reset: bool) -> list[int]:
            seen, self.batches = self.batches, ([] if reset else self.batches)
            return seen

    handle = serve.run(Model.bind(str(args.model.resolve())), name="peer", route_prefix=None)
    started_s = time.perf_counter() - t_start
    base = np.load(args.inputs).astype(np.float32)
    counter = itertools.count()

    async def drive(seconds: float) -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds

        async def one_sender() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                x = distinct_input(base, next(counter))
                t0 = time.perf_counter()
                try:
                    await handle.remote(x)
                except Exception:  # counted, not fatal: the figures say how many
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1e3)

        await asyncio.gather(*(one_sender() for _ in range(args.inflight)))
        return latencies, errors

    async def run() -> dict[str, Any]:
        await drive(args.warmup)
        await handle.batch_stats.remote(True)
        before = cpu_by_group()
        t0 = time.perf_counter()
        latencies, errors = await drive(args.duration)
        wall = time.perf_counter() - t0
        used = cpu_delta(before, cpu_by_group())
        batches = await handle.batch_stats.remote(True)
        n = len(latencies)
        q = statistics.quantiles(latencies, n=100) if n >= 2 else [float("nan")] * 99
        per_job = {g: 1e3 * s / max(n, 1) for g, s in used.items()}
        per_job["all_ray"] = per_job["replica"] + per_job["ray_other"]
        return {
            "system": "ray",
            "ray": ray.__version__,
            "jobs": n,
            "errors": errors,
            "seconds": wall,
            "throughput": n / wall,
            "p50_ms": q[49],
            "p99_ms": q[98],
            "mean_batch": statistics.fmean(batches) if batches else 0.0,
            "cpu_ms_per_job": per_job,
            "cpu_cores": {g: s / wall for g, s in used.items()},
            "started_s": started_s,
            "access_log": not args.no_access_log,
        }

    try:
        out = asyncio.run(run())
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
