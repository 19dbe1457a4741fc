"""Jobs lost when workers are SIGKILLed at random moments under steady load, per worker tree.

    .venv/bin/python benchmarks/kill_storm.py --models-dir models [--kills 12] [--jobs 10000]
        [--rate 400] [--tree . --tree /tmp/inferq-old]

For each ``--tree`` (a checkout of inferq; its worker code is what runs, the producer
is always this one), on a fresh private redis-server: two worker slots serve digits
fp32 and int8, one producer thread submits distinct inputs one by one at ``--rate``,
and a random slot's worker is SIGKILLed at a random moment (0-1.5 s after it came up)
and restarted, until both ``--kills`` and ``--jobs`` are reached. Then it waits until
no job has finished for visibility timeout + 15 s and counts the jobs that never got
a result. Compare trees within one run (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.system_bench import cpu_name  # noqa: E402
from benchmarks.trees import cli_module  # noqa: E402
from ops.local.processes import die_with_parent, stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from producers.job import Job  # noqa: E402
from tasks.keys import result_key  # noqa: E402
from tasks.settings import Settings  # noqa: E402

MODELS = ["digits:fp32", "digits:int8"]


def start_worker(
    tree: Path, settings: Settings, log: Path, n: int, extra: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """An ``inferq worker`` run from ``tree``'s code, serving ``MODELS``."""
    host = f"storm{n}-{os.getpid()}@localhost"
    cmd = [sys.executable, "-m", cli_module(tree), "worker", "--models", ",".join(MODELS)]
    cmd += ["--hostname", host, "--metrics-port", "0", *(extra or [])]
    env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(  # cwd=tree: that checkout's modules come first on sys.path
        cmd, cwd=tree, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    return proc, host


def submit_steadily(
    client: Client, base: np.ndarray, rate: float, jobs: list[Job], stop: threading.Event
) -> None:
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        x = base[i % len(base)] + np.float32(i) * np.float32(1e-5)
        jobs.append(client.submit("digits", x, variant=MODELS[i % 2].split(":")[1]))
        i += 1
        ahead = i / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)


def finished(client: Client, jobs: list[Job]) -> int:
    done = 0
    for i in range(0, len(jobs), 1000):
        done += int(client.backend.exists(*[result_key(j.id) for j in jobs[i : i + 1000]]))
    return done


def storm(tree: Path, models_dir: Path, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    base = np.load(models_dir / "digits" / "data" / "heldout_x.npy").astype(np.float32)
    base = base + np.float32(time.time() % 1)
    with LocalRedis() as server:
        settings = Settings(
            broker_url=server.url,
            models_dir=models_dir,
            visibility_timeout_s=args.visibility,
            log_level="WARNING",
        )
        with Client(settings) as client:
            n = 0
            slots = []
            for _ in range(2):
                slots.append(start_worker(tree, settings, logdir / f"worker-{n}.log", n))
                n += 1
            jobs: list[Job] = []
            stop = threading.Event()
            sub = threading.Thread(
                target=submit_steadily, args=(client, base, args.rate, jobs, stop), daemon=True
            )
            kills = 0
            t0 = time.monotonic()
            try:
                for _, host in slots:
                    wait_for_workers(client, MODELS, timeout=120, hostname=host)
                sub.start()
                while kills < args.kills or len(jobs) < args.jobs:
                    slot = rng.randrange(2)
                    proc, host = slots[slot]
                    wait_for_workers(client, MODELS, timeout=120, hostname=host)
                    time.sleep(rng.uniform(0.0, 1.5))
                    proc.kill()
                    proc.wait()
                    kills += 1
                    slots[slot] = start_worker(tree, settings, logdir / f"worker-{n}.log", n)
                    n += 1
            finally:
                stop.set()
                sub.join(timeout=30)
            storm_s = time.monotonic() - t0
            last, last_change = -1, time.monotonic()
            while time.monotonic() - last_change < args.visibility + 15:
                done = finished(client, jobs)
                if done != last:
                    last, last_change = done, time.monotonic()
                if done == len(jobs):
                    break
                time.sleep(1.0)
            for proc, _ in slots:
                stop_process(proc)
    return {
        "tree": str(tree),
        "jobs": len(jobs),
        "kills": kills,
        "storm_s": round(storm_s, 1),
        "submit_rate": round(len(jobs) / storm_s),
        "lost": len(jobs) - last,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--tree", type=Path, action="append", help="inferq checkout(s) whose worker runs")
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=400.0)
    ap.add_argument("--visibility", type=int, default=3)
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()
    print(f"# {cpu_name()}, {os.cpu_count()} cores", flush=True)
    rows = []
    for tree in args.tree or [ROOT]:
        with tempfile.TemporaryDirectory(prefix="kill-storm-") as logs:
            row = storm(tree.resolve(), args.models_dir.resolve(), args, Path(logs))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| worker tree | jobs | kills | submit rate /s | jobs lost |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['tree']}` | {r['jobs']} | {r['kills']} | {r['submit_rate']} | {r['lost']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
