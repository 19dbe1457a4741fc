"""How fast an idle worker picks up a job, per worker tree, and what idle workers cost.

    .venv/bin/python benchmarks/idle_wake.py --models-dir models [--jobs 300] [--gap-ms 30]
        [--tree . --tree /tmp/inferq-old] [--workers 20]

For each ``--tree`` (a checkout of inferq whose worker code runs; the producer is this
one), on a fresh private redis-server: one digits:fp32 worker with batching off, and
jobs sent one at a time, each only after the previous result arrived and a pause of
``--gap-ms``, so the worker is idle, waiting, whenever a job arrives. Reports the
job's ``queue_ms`` (enqueue to the worker's receive: the wake-up) and end-to-end time
(submit to result seen by the client), p50/p95/p99.

With ``--workers N``, N such workers wait at once (the idle herd), and the run also
reports the fetch-script calls per job, summed over all workers from the counters in
their heartbeats (``fetches``: calls that looked at the queues, taken before and after
the jobs, less what the same workers did in an equally long idle stretch), and
Redis's commands per second while they all sit idle (``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.kill_storm import start_worker  # noqa: E402
from benchmarks.system_bench import cpu_name  # noqa: E402
from ops.local.processes import stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.stats import summarize  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks import constants as C  # noqa: E402
from tasks.settings import Settings  # noqa: E402
from tasks.wire import WorkerBeat  # noqa: E402


def fetch_counts(client: Client, hosts: list[str]) -> int:
    """The workers' ``fetches`` counters, once each has beaten after this call began."""
    since = time.time()
    deadline = time.monotonic() + 4 * C.WORKER_HEARTBEAT_S
    while True:
        beats = [WorkerBeat.parse(v) for v in client.backend.hgetall(C.WORKERS_KEY).values()]
        fresh = {b.hostname: b for b in beats if b is not None and b.hostname in hosts and b.seen_at > since}
        if len(fresh) == len(hosts) or time.monotonic() > deadline:
            return sum(int(b.stats.get("fetches", 0)) for b in fresh.values())
        time.sleep(0.2)


def total_commands(client: Client) -> int:
    """Every command Redis has run (in-script included), less the bench's own INFO calls."""
    stats = client.backend.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def commands_per_s(client: Client, seconds: float) -> float:
    before = total_commands(client)
    time.sleep(seconds)
    return (total_commands(client) - before) / seconds


def run(
    tree: Path, models_dir: Path, jobs: int, gap_s: float, logdir: Path, workers: int = 1
) -> dict[str, object]:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy").astype(np.float32)
    out: dict[str, object] = {"tree": str(tree), "workers": workers}
    with LocalRedis() as server:
        settings = Settings(broker_url=server.url, models_dir=models_dir, log_level="WARNING")
        with Client(settings) as client:
            procs = [
                start_worker(tree, settings, logdir / f"worker{n}.log", n, ["--max-batch-size", "1"])
                for n in range(workers)
            ]
            hosts = [h for _, h in procs]
            try:
                for host in hosts:
                    wait_for_workers(client, ["digits:fp32"], timeout=300, hostname=host)
                time.sleep(2.0)  # settled: start-up traffic over
                idle_rate = 0.0
                if workers > 1:
                    idle_rate = commands_per_s(client, 20.0)
                    out["idle_commands_per_s_per_worker"] = idle_rate / workers
                    f0 = fetch_counts(client, hosts)
                c0 = total_commands(client)
                queue, e2e = [], []
                t0 = time.monotonic()
                for i in range(jobs + 10):
                    time.sleep(gap_s)
                    r = client.submit("digits", x[i % len(x)], variant="fp32", no_cache=True).wait(timeout=30)
                    if i >= 10:  # the first few warm up connections and the interpreter
                        queue.append(r.timing.queue_ms)
                        e2e.append(r.timing.end_to_end_ms or 0.0)
                busy_s = time.monotonic() - t0
                # Redis commands the jobs cost (client + all workers, in-script included),
                # less what the idle workers would have sent anyway in that time.
                out["commands_per_job"] = (total_commands(client) - c0 - idle_rate * busy_s) / (jobs + 10)
                if workers > 1:
                    f1 = fetch_counts(client, hosts)
                    time.sleep(busy_s)  # the same stretch again, idle: what they fetch anyway
                    f2 = fetch_counts(client, hosts)
                    out["fetches_per_job"] = (f1 - f0) / (jobs + 10)
                    out["fetches_per_job_less_idle"] = ((f1 - f0) - (f2 - f1)) / (jobs + 10)
            finally:
                for proc, _ in procs:
                    stop_process(proc)
    out["queue_ms"] = summarize(queue)
    out["end_to_end_ms"] = summarize(e2e)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--tree", type=Path, action="append", help="inferq checkout(s) whose worker runs")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=1, help="idle workers waiting at once")
    args = ap.parse_args()
    print(f"# {cpu_name()}, {os.cpu_count()} cores", flush=True)
    rows = []
    for tree in args.tree or [ROOT]:
        with tempfile.TemporaryDirectory(prefix="idle-wake-") as logs:
            rows.append(
                run(
                    tree.resolve(),
                    args.models_dir.resolve(),
                    args.jobs,
                    args.gap_ms / 1e3,
                    Path(logs),
                    args.workers,
                )
            )
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| worker tree | workers | queue p50 | p95 | p99 | end to end p50 | p95 | p99 "
        "| fetches per job | less idle | Redis commands per job | idle commands/s per worker |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        q, e = r["queue_ms"], r["end_to_end_ms"]
        cells = [f"{d[k]:.2f}" for d in (q, e) for k in ("p50", "p95", "p99")]  # type: ignore[index]
        extra = [
            f"{r[k]:.2f}" if k in r else "-"
            for k in (
                "fetches_per_job",
                "fetches_per_job_less_idle",
                "commands_per_job",
                "idle_commands_per_s_per_worker",
            )
        ]
        print(f"| `{r['tree']}` | {r['workers']} | " + " | ".join(cells + extra) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
