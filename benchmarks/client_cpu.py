"""CPU per single job on the sending side: many threads sharing one sync ``Client``.

    .venv/bin/python benchmarks/client_cpu.py [--threads 64] [--seconds 10] [--models-dir /tmp/iq-models]

Starts a private ``redis-server`` and one inferq worker (batching on: the model's own
``max_batch_size``), then ``--threads`` threads share one ``Client``, each submitting a
new single input (no cache hits) and waiting for its result, over and over, for
``--seconds`` after a warm-up. Reports jobs/s, the latency of submit + wait (p50, p99),
and CPU per job of each process: this one (the client: ``time.process_time``, all its
threads), the worker (its process tree) and ``redis-server`` (``/proc/<pid>/stat``).
Inputs are made before the clock starts (a copy and one changed element per job), so
the client's figure is the library's cost, not the bench's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.redis_commands import process_tree, spawn_worker  # noqa: E402
from ops.local.processes import stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: set[int]) -> float:
    """User + system CPU seconds of ``pids`` (from /proc; children that exited are not counted)."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / TICKS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the clock starts")
    ap.add_argument("--model", default="digits:fp32")
    ap.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("INFERQ_MODELS_DIR", ROOT / "models"))
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile the window with yappi (CPU clock): top N functions",
    )
    args = ap.parse_args()
    logdir = ROOT / ".run" / "client_cpu"
    logdir.mkdir(parents=True, exist_ok=True)
    model, variant = args.model.split(":")
    with LocalRedis() as server:
        settings = Settings(broker_url=server.url, models_dir=args.models_dir, log_level="WARNING")
        worker = spawn_worker(settings, args.model, 0, logdir)
        try:
            with Client(settings) as c:
                wait_for_workers(c, [args.model], timeout=120)
                info = c.model_info(model, variant)
                rng = np.random.default_rng(int(time.time()))
                bases = {
                    s.name: rng.uniform(0, 1, tuple(d or 1 for d in s.shape)).astype(np.float32)
                    for s in info.inputs
                }
                first = next(iter(bases))
                counter = iter(range(1, 1 << 62))  # next() on it is atomic under the GIL
                state = {"measuring": False, "stop": False}
                lat: list[list[float]] = [[] for _ in range(args.threads)]
                errors: list[BaseException] = []

                def run(me: int) -> None:
                    mine = lat[me]
                    while not state["stop"]:
                        x = {k: v.copy() for k, v in bases.items()}
                        x[first].flat[0] = float(next(counter))  # a new input: no cache hit
                        t0 = time.perf_counter()
                        try:
                            c.submit(model, x, variant=variant).wait(timeout=60)
                        except Exception as exc:  # counted, not fatal: the figure says so
                            errors.append(exc)
                            continue
                        if state["measuring"]:
                            mine.append((time.perf_counter() - t0) * 1e3)

                threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.threads)]
                for t in threads:
                    t.start()
                time.sleep(args.warmup)
                wpids = process_tree(worker.pid)
                rpid = {server.proc.pid} if server.proc else set()
                if args.profile:
                    import yappi  # only for --profile: not a dependency of inferq

                    yappi.set_clock_type("cpu")
                    yappi.start()
                cpu0, w0, r0, t0 = time.process_time(), cpu_s(wpids), cpu_s(rpid), time.perf_counter()
                state["measuring"] = True
                time.sleep(args.seconds)
                state["measuring"] = False
                cpu1, w1, r1, t1 = time.process_time(), cpu_s(wpids), cpu_s(rpid), time.perf_counter()
                if args.profile:
                    yappi.stop()
                    stats = yappi.get_func_stats()
                    for sort in ("tsub", "ttot"):
                        print(f"--- by {sort} (CPU s over the window)")
                        for f in stats.sort(sort)[: args.profile]:
                            where = f"{Path(f.module).name}:{f.lineno}"
                            print(f"{f.tsub:7.3f} {f.ttot:7.3f} {f.ncall:8d}  {f.name} ({where})")
                state["stop"] = True
                for t in threads:
                    t.join(timeout=70)
        finally:
            stop_process(worker, grace_s=10)
    done = sorted(v for mine in lat for v in mine)
    n = len(done)
    if n == 0:
        print(f"no job finished; errors: {errors[:3]}")
        return 1
    out: dict[str, Any] = {
        "threads": args.threads,
        "seconds": t1 - t0,
        "jobs": n,
        "jobs_s": n / (t1 - t0),
        "p50_ms": statistics.median(done),
        "p99_ms": done[int(0.99 * (n - 1))],
        "client_cpu_ms_per_job": (cpu1 - cpu0) * 1e3 / n,
        "worker_cpu_ms_per_job": (w1 - w0) * 1e3 / n,
        "redis_cpu_ms_per_job": (r1 - r0) * 1e3 / n,
        "errors": len(errors),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"# {args.model}; {args.threads} threads on one Client, {out['seconds']:.1f} s; {os.cpu_count()} cores\n"
        f"{n} jobs, {out['jobs_s']:.0f} jobs/s, p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, "
        f"errors {len(errors)}\n"
        f"CPU per job: client {out['client_cpu_ms_per_job']:.2f} ms, worker {out['worker_cpu_ms_per_job']:.2f} ms, "
        f"redis {out['redis_cpu_ms_per_job']:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
