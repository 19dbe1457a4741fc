"""inferq against Ray Serve: the same model, batching and load, alternated in one run (issue 18).

    .venv/bin/python benchmarks/ray_peer.py [--models-dir /tmp/iq-models] [--duration 10] \
        [--rounds 2] [--inflight 64] [--ray-python /work/ray-venv/bin/python] [--aof] [--json]

Each round runs inferq, then Ray (inferq, ray, inferq, ray, ...), so drift of this
shared machine shows in both:

- inferq: a private redis-server, one worker process (digits fp32 ``.tflite``, batch 32,
  2 ms wait, one thread), and ``--inflight`` threads in this process sharing one sync
  ``producers.Client``, each submitting a distinct single input and waiting for it;
- Ray: ``benchmarks/ray_peer_serve.py`` under Ray's own venv: Ray Serve, one replica,
  the same ``.tflite`` through ``ai_edge_litert``, ``@serve.batch(max_batch_size=32,
  batch_wait_timeout_s=0.002)``, driven through its ``DeploymentHandle`` with the same
  number of requests in flight and the same inputs.

Both warm up for ``--warmup`` s, then measure for ``--duration`` s: throughput, p50/p99
from submit to result, mean batch, and CPU per job of each process from /proc
(utime + stime): inferq's client (this process), worker and redis-server; Ray's client
(its driver, where Serve's router runs), replica, and every other Ray process.

Ray keeps requests in process memory; inferq keeps every job in Redis until its result
is stored (a worker killed mid-batch loses nothing). ``--aof`` runs inferq's Redis with
``appendonly yes``, ``appendfsync everysec`` (a Redis restart loses at most a second).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ray_peer_serve import cpu_s, distinct_input  # noqa: E402
from benchmarks.system_bench import cpu_name  # noqa: E402
from ops.local.processes import stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def drive(
    client: Client, base: np.ndarray, counter: itertools.count[int], seconds: float, inflight: int
) -> tuple[list[float], list[int], int]:
    """``inflight`` threads, each submitting a distinct input and waiting, for ``seconds``."""
    latencies: list[float] = []
    batches: list[int] = []
    errors: list[BaseException] = []
    end = time.perf_counter() + seconds

    def sender() -> None:
        while time.perf_counter() < end:
            x = distinct_input(base, next(counter))
            t0 = time.perf_counter()
            try:
                r = client.submit("digits", x, variant="fp32").wait(timeout=60)
            except Exception as exc:  # counted, not fatal: the figures say how many
                errors.append(exc)
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
            batches.append(r.timing.batch_size)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"inferq: {len(errors)} errors, the first: {errors[0]!r}", file=sys.stderr)
    return latencies, batches, len(errors)


def run_inferq(args: argparse.Namespace, base: np.ndarray, logdir: Path) -> dict[str, Any]:
    load = loadavg()
    with LocalRedis(appendonly=args.aof) as rs:
        settings = Settings(
            broker_url=rs.url, models_dir=args.models_dir, log_level="WARNING", metrics_port=0
        )
        cmd = [sys.executable, "-m", "ops.cli", "worker", "--models", "digits:fp32", "--max-batch-size", "32",
               "--max-wait-ms", "2", "--threads", "1", "--metrics-port", "0"]  # fmt: skip
        with (logdir / "ray-peer-inferq-worker.log").open("wb") as log:
            worker = subprocess.Popen(
                cmd, env={**os.environ, **settings.env()}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        try:
            with Client(settings) as client:
                wait_for_workers(client, ["digits:fp32"], timeout=120)
                counter = itertools.count()
                drive(client, base, counter, args.warmup, args.inflight)
                assert rs.proc is not None
                pids = {"client": os.getpid(), "worker": worker.pid, "redis": rs.proc.pid}
                before = {k: cpu_s(p) for k, p in pids.items()}
                t0 = time.perf_counter()
                latencies, batches, errors = drive(client, base, counter, args.duration, args.inflight)
                wall = time.perf_counter() - t0
                used = {k: cpu_s(p) - before[k] for k, p in pids.items()}
        finally:
            stop_process(worker)
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    per_job = {k: 1e3 * s / max(n, 1) for k, s in used.items()}
    return {
        "system": "inferq",
        "jobs": n,
        "errors": errors,
        "seconds": wall,
        "throughput": n / wall,
        "p50_ms": q[49],
        "p99_ms": q[98],
        "mean_batch": statistics.fmean(batches),
        "cpu_ms_per_job": per_job,
        "cpu_cores": {k: s / wall for k, s in used.items()},
        "loadavg_before": load,
    }


def run_ray(args: argparse.Namespace) -> dict[str, Any]:
    load = loadavg()
    model = args.models_dir / "digits" / "fp32" / "model.tflite"
    cmd = [str(args.ray_python), str(ROOT / "benchmarks" / "ray_peer_serve.py"), "--model", str(model),
           "--inputs", str(args.models_dir / "digits" / "data" / "heldout_x.npy"), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--inflight", str(args.inflight)]  # fmt: skip
    if args.ray_no_access_log:
        cmd.append("--no-access-log")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the Ray side failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "loadavg_before": load}


def row(r: dict[str, Any]) -> str:
    c = r["cpu_ms_per_job"]
    if r["system"] == "inferq":
        cpu = f"client {c['client']:.2f}, worker {c['worker']:.2f}, redis {c['redis']:.2f}"
        total = c["client"] + c["worker"] + c["redis"]
    else:
        cpu = f"client {c['client']:.2f}, replica {c['replica']:.2f}, other Ray {c['ray_other']:.2f}"
        total = c["client"] + c["all_ray"]
    return (
        f"| {r['round']} | {r['system']} | {r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{r['mean_batch']:.1f} | {cpu} | {total:.2f} | {r['errors']} | {r['loadavg_before']:.1f} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--ray-python", type=Path, default=Path("/work/ray-venv/bin/python"))
    ap.add_argument("--aof", action="store_true", help="inferq's Redis with appendonly yes, everysec")
    ap.add_argument(
        "--ray-no-access-log", action="store_true", help="Ray Serve without its per-request access log"
    )
    ap.add_argument("--only", choices=("inferq", "ray"), help="run one side only (while developing)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.only != "inferq" and not args.ray_python.exists():
        raise SystemExit(
            f"{args.ray_python} does not exist: python3.11 -m venv /work/ray-venv && "
            '/work/ray-venv/bin/pip install "ray[serve]" ai-edge-litert numpy'
        )
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    base = np.load(args.models_dir / "digits" / "data" / "heldout_x.npy").astype(np.float32)
    results: list[dict[str, Any]] = []
    for i in range(1, args.rounds + 1):
        for system in ("inferq", "ray"):
            if args.only not in (None, system):
                continue
            r = run_inferq(args, base, logdir) if system == "inferq" else run_ray(args)
            r["round"] = i
            results.append(r)
            print(row(r), file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; digits fp32, batch 32 / 2 ms, {args.inflight} in "
        f"flight, {args.duration:g} s per run after {args.warmup:g} s warm-up"
        + (", inferq's Redis with AOF everysec" if args.aof else "")
        + (", Ray Serve's access log off" if args.ray_no_access_log else "")
    )
    print(
        "| round | system | jobs/s | p50 ms | p99 ms | mean batch | CPU ms per job | CPU ms per job, all "
        "| errors | load avg before |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(row(r))
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(results)
        if a["round"] == b["round"] and (a["system"], b["system"]) == ("inferq", "ray")
    ]
    for a, b in pairs:
        print(f"round {a['round']}: inferq / Ray throughput = {a['throughput'] / b['throughput']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
