"""Scale-out on one Redis: 1, 2, 4 worker processes, a producer fleet, Redis's own cost (issue 18, item 5).

    .venv/bin/python benchmarks/scale_out.py [--models-dir /tmp/iq-models] [--workers 1,2,4] \
        [--producers 4] [--threads 16] [--single-jobs 6000] [--bulk-jobs 24000] [--split] [--json]

One private redis-server (``LocalRedis``) for the whole run. For each mode (single-input
jobs, batching on: one input per message; bulk: 64 inputs per message) and each worker
count N: N ``inferq worker`` processes (digits fp32, one thread, the model's batching:
32 / 2 ms) are started and announced; then a fleet of producer processes (each its own
``Client``, started and connected beforehand) is told to go: for single-input jobs each
runs ``--threads`` request threads that submit one input and wait for it, as a web
backend does (the client groups concurrent submissions); for bulk each sends its share
with ``submit_many`` and waits for all their results. The window runs from
"go" to the last producer's last result, so everything a job costs Redis (the claim,
the push, the fetch, the store and publish, the ack, the result reaching its waiter)
falls inside it, and nothing else does.

Reported per run: jobs/s (all jobs ÷ window), per worker (÷ N), the workers' own
drain rate (first receive to last finish, from the results' stamps), and for Redis:
the CPU it used (utime + stime from /proc/<pid>/stat) as a fraction of one core and
in µs per job, commands/s and commands per job (``INFO stats``
``total_commands_processed`` and ``INFO commandstats`` deltas), and the most called
commands per job. One Redis core's ceiling is then about 1e6 / (µs per job) jobs/s,
whatever the number of workers. Each run uses fresh inputs (no cache hits); the
database is flushed between runs (the server is this script's own).

On a 2-core machine the producers, N workers and Redis share two cores: past N = 2 the
workers contend with each other and with the producers, so throughput here says
little about more workers; Redis's CPU per job is what carries over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ray_peer_serve import cpu_s  # noqa: E402
from benchmarks.system_bench import cpu_name  # noqa: E402
from ops.local.processes import stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402

MODES = {"single": 1, "bulk": 64}  # inputs per message


def inputs(models_dir: Path, n: int, salt: int) -> np.ndarray:
    base = np.load(models_dir / "digits" / "data" / "heldout_x.npy").astype(np.float32)
    xs = base[np.arange(n) % len(base)]
    noise = np.random.default_rng(salt).uniform(0, 1e-3, xs.shape).astype(np.float32)
    return xs + noise  # distinct: no cache hits


# -- a producer process ----------------------------------------------------------------


def producer(args: argparse.Namespace) -> int:
    """Connect, say ready, wait for "go" on stdin, send, wait for every result, report."""
    settings = Settings(
        broker_url=args.url, result_backend=args.backend_url, models_dir=args.models_dir, log_level="WARNING"
    )
    xs = inputs(args.models_dir, args.jobs, args.salt)
    with Client(settings) as c:
        c.model_info("digits", "fp32")
        print("ready", flush=True)
        sys.stdin.readline()
        cpu0, t0 = cpu_s(os.getpid()), time.perf_counter()
        if args.chunk == 1:
            results = submit_each(c, xs, args.threads)
        else:
            results = c.wait_all(
                c.submit_many("digits", xs, variant="fp32", chunk_size=args.chunk), timeout=900
            )
        done_s = time.perf_counter() - t0
    ok = [r for r in results if not isinstance(r, Exception)]
    print(
        json.dumps(
            {
                "jobs": len(ok),
                "errors": len(results) - len(ok),
                "done_s": done_s,
                "first_received": min(r.timing.received_at for r in ok),
                "last_finished": max(r.timing.finished_at for r in ok),
                "batch_sum": sum(r.timing.batch_size for r in ok),
                "cpu_s": cpu_s(os.getpid()) - cpu0,
            }
        ),
        flush=True,
    )
    return 0


def submit_each(c: Client, xs: np.ndarray, threads: int) -> list[Any]:
    """Single-input jobs as a web backend sends them: ``threads`` request threads sharing
    the client, each submitting one input and waiting for it (the client groups the
    claims and pushes of concurrent submissions)."""
    results: list[Any] = [None] * len(xs)
    todo = iter(range(len(xs)))
    lock = threading.Lock()

    def one_thread() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = c.submit("digits", xs[i], variant="fp32").wait(timeout=120)
            except Exception as exc:  # counted by the caller
                results[i] = exc

    pool = [threading.Thread(target=one_thread, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


# -- the run ------------------------------------------------------------------------------


def redis_counters(r: redis.Redis) -> tuple[int, dict[str, int]]:
    total = int(r.info("stats")["total_commands_processed"])
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
    return total, calls


def one_run(
    args: argparse.Namespace,
    servers: dict[str, LocalRedis],
    settings: Settings,
    mode: str,
    n_workers: int,
    salt: int,
) -> dict[str, Any]:
    """One mode at one worker count; ``servers``: {"redis": one} or {"broker": a, "backend": b}."""
    conns = {name: redis.Redis.from_url(rs.url) for name, rs in servers.items()}
    for r in conns.values():
        r.flushall()
    logdir = ROOT / ".run" / "bench"
    env = {**os.environ, **settings.env()}
    workers = []
    for i in range(n_workers):
        cmd = [sys.executable, "-m", "ops.cli", "worker", "--models", "digits:fp32", "--threads", "1",
               "--metrics-port", "0", "--hostname", f"scale{i}-{salt}@localhost"]  # fmt: skip
        with (logdir / f"scale-out-worker{i}.log").open("wb") as log:
            workers.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    jobs = args.single_jobs if mode == "single" else args.bulk_jobs
    share = jobs // args.producers
    fleet = []
    try:
        with Client(settings) as c:
            wait_for_workers(c, ["digits:fp32"], timeout=180, count=n_workers)
        for p in range(args.producers):
            cmd = [sys.executable, __file__, "--producer", "--url", settings.broker_url,
                   "--backend-url", settings.result_backend, "--models-dir", str(args.models_dir),
                   "--jobs", str(share), "--chunk", str(MODES[mode]), "--salt", str(salt * 100 + p),
                   "--threads", str(args.threads)]  # fmt: skip
            fleet.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
                )
            )
        for f in fleet:
            assert f.stdout is not None and f.stdout.readline().strip() == "ready"
        pids = {name: rs.proc.pid for name, rs in servers.items() if rs.proc is not None}
        pids |= {f"worker{i}": w.pid for i, w in enumerate(workers)}
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        before = {name: redis_counters(r) for name, r in conns.items()}
        t0 = time.perf_counter()
        for f in fleet:
            assert f.stdin is not None
            f.stdin.write("go\n")
            f.stdin.flush()
        reports = []
        for f in fleet:
            assert f.stdout is not None
            reports.append(json.loads(f.stdout.readline()))
        wall = time.perf_counter() - t0
        cpu = {k: cpu_s(p) - cpu0[k] for k, p in pids.items()}
        after = {name: redis_counters(r) for name, r in conns.items()}
    finally:
        for f in fleet:
            stop_process(f)  # type: ignore[arg-type]
        for w in workers:
            stop_process(w)
    done = sum(rep["jobs"] for rep in reports)
    drain = done / (
        max(rep["last_finished"] for rep in reports) - min(rep["first_received"] for rep in reports)
    )
    commands = sum(after[n][0] - before[n][0] for n in servers)
    per_command: dict[str, int] = {}
    for n in servers:
        for k, v in after[n][1].items():
            if v - before[n][1].get(k, 0) > 0:
                per_command[f"{k}" if len(servers) == 1 else f"{n}:{k}"] = v - before[n][1].get(k, 0)
    top = sorted(per_command.items(), key=lambda kv: -kv[1])[:6]
    redis_cpu = sum(cpu[n] for n in servers)
    return {
        "mode": mode,
        "workers": n_workers,
        "producers": args.producers,
        "jobs": done,
        "errors": sum(rep["errors"] for rep in reports),
        "seconds": wall,
        "throughput": done / wall,
        "per_worker": done / wall / n_workers,
        "drain": drain,
        "mean_batch": sum(rep["batch_sum"] for rep in reports) / max(done, 1),
        "redis_cores": redis_cpu / wall,
        "redis_us_per_job": 1e6 * redis_cpu / max(done, 1),
        "redis_us_per_job_each": {n: 1e6 * cpu[n] / max(done, 1) for n in servers},
        "commands_s": commands / wall,
        "commands_per_job": commands / max(done, 1),
        "top_commands_per_job": {k: v / max(done, 1) for k, v in top},
        "worker_cores": [cpu[f"worker{i}"] / wall for i in range(n_workers)],
        "producer_cores": sum(rep["cpu_s"] for rep in reports) / wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--single-jobs", type=int, default=6000)
    ap.add_argument("--bulk-jobs", type=int, default=24000)
    ap.add_argument("--modes", default="single,bulk")
    ap.add_argument(
        "--split",
        action="store_true",
        help="broker and result backend on two redis-servers (Redis CPU of each)",
    )
    ap.add_argument("--json", action="store_true")
    # a producer of the fleet (started by this script)
    ap.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--backend-url", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--threads", type=int, default=16, help="request threads per producer (single-input jobs)"
    )
    ap.add_argument("--salt", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.producer:
        return producer(args)
    (ROOT / ".run" / "bench").mkdir(parents=True, exist_ok=True)
    runs = []
    with contextlib.ExitStack() as stack:
        names = ("broker", "backend") if args.split else ("redis",)
        servers = {name: stack.enter_context(LocalRedis()) for name in names}
        first = next(iter(servers.values()))
        settings = Settings(
            broker_url=first.url,
            result_backend=servers["backend"].url if args.split else "",
            models_dir=args.models_dir,
            log_level="WARNING",
            metrics_port=0,
        )
        salt = 1
        for mode in args.modes.split(","):
            for n in (int(w) for w in args.workers.split(",")):
                run = one_run(args, servers, settings, mode, n, salt)
                salt += 1
                runs.append(run)
                print(json.dumps(run), file=sys.stderr)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; digits fp32, {args.producers} producer processes "
        f"({args.threads} request threads each for single jobs), "
        + (
            "broker and result backend on two private redis-servers"
            if args.split
            else "one private redis-server"
        )
    )
    print(
        "| mode | workers | jobs | jobs/s | per worker | workers' drain /s | mean batch | Redis CPU (cores) "
        "| Redis µs/job | commands/s | commands/job | worker cores | producer cores |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in runs:
        print(
            f"| {x['mode']} | {x['workers']} | {x['jobs']} | {x['throughput']:.0f} | {x['per_worker']:.0f} | "
            f"{x['drain']:.0f} | {x['mean_batch']:.1f} | {x['redis_cores']:.2f} | {x['redis_us_per_job']:.1f} | "
            f"{x['commands_s']:.0f} | {x['commands_per_job']:.3f} | "
            f"{' + '.join(f'{c:.2f}' for c in x['worker_cores'])} | {x['producer_cores']:.2f} |"
        )
    if args.split:
        print("\nRedis µs of CPU per job, broker / result backend:")
        for x in runs:
            each = x["redis_us_per_job_each"]
            print(f"- {x['mode']}, {x['workers']} workers: {each['broker']:.1f} / {each['backend']:.1f}")
    print("\nmost called Redis commands per job (commands run inside Lua scripts included):")
    for x in runs:
        top = ", ".join(f"{k} {v:.3f}" for k, v in x["top_commands_per_job"].items())
        print(f"- {x['mode']}, {x['workers']} workers: {top}")
    for mode in dict.fromkeys(x["mode"] for x in runs):
        us = [x["redis_us_per_job"] for x in runs if x["mode"] == mode]
        print(
            f"{mode}: Redis {min(us):.1f}-{max(us):.1f} µs of CPU per job: one Redis core saturates near "
            f"{1e6 / max(us):.0f}-{1e6 / min(us):.0f} jobs/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
