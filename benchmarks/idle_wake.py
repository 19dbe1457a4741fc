"""How fast an idle worker picks up a job, per worker tree: the doorbell against BRPOP.

    .venv/bin/python benchmarks/idle_wake.py --models-dir models [--jobs 300] [--gap-ms 30]
        [--tree . --tree /tmp/inferq-old]

For each ``--tree`` (a checkout of inferq whose worker code runs; the producer is this
one), on a fresh private redis-server: one digits:fp32 worker with batching off, and
jobs sent one at a time, each only after the previous result arrived and a pause of
``--gap-ms``, so the worker is idle, waiting, whenever a job arrives. Reports the
job's ``queue_ms`` (enqueue to the worker's receive: the wake-up) and end-to-end time
(submit to result seen by the client), p50/p95/p99.
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
from tasks.settings import Settings  # noqa: E402


def run(tree: Path, models_dir: Path, jobs: int, gap_s: float, logdir: Path) -> dict[str, object]:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy").astype(np.float32)
    with LocalRedis() as server:
        settings = Settings(broker_url=server.url, models_dir=models_dir, log_level="WARNING")
        with Client(settings) as client:
            proc, host = start_worker(tree, settings, logdir / "worker.log", 0, ["--max-batch-size", "1"])
            try:
                wait_for_workers(client, ["digits:fp32"], timeout=120, hostname=host)
                queue, e2e = [], []
                for i in range(jobs + 10):
                    time.sleep(gap_s)
                    r = client.submit("digits", x[i % len(x)], variant="fp32", no_cache=True).wait(timeout=30)
                    if i >= 10:  # the first few warm up connections and the interpreter
                        queue.append(r.timing.queue_ms)
                        e2e.append(r.timing.end_to_end_ms or 0.0)
            finally:
                stop_process(proc)
    return {"tree": str(tree), "queue_ms": summarize(queue), "end_to_end_ms": summarize(e2e)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--tree", type=Path, action="append", help="inferq checkout(s) whose worker runs")
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=30.0)
    args = ap.parse_args()
    print(f"# {cpu_name()}, {os.cpu_count()} cores", flush=True)
    rows = []
    for tree in args.tree or [ROOT]:
        with tempfile.TemporaryDirectory(prefix="idle-wake-") as logs:
            rows.append(
                run(tree.resolve(), args.models_dir.resolve(), args.jobs, args.gap_ms / 1e3, Path(logs))
            )
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| worker tree | queue p50 | p95 | p99 | end to end p50 | p95 | p99 |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        q, e = r["queue_ms"], r["end_to_end_ms"]
        cells = [f"{d[k]:.2f}" for d in (q, e) for k in ("p50", "p95", "p99")]  # type: ignore[index]
        print(f"| `{r['tree']}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
