"""Drain rate of one worker per worker tree, interleaved, so trees are compared in one run.

    .venv/bin/python benchmarks/drain_compare.py --models-dir models --tree /tmp/inferq-old --tree . \\
        [--rounds 3] [--jobs 3000] [--max-batch-size 1]

Each round, for each ``--tree`` in turn (a checkout of inferq whose worker code runs):
a fresh private redis-server, ``--jobs`` single-input digits fp32 jobs queued first,
then one worker started; the drain rate is read from the workers' own stamps (first
receive to last finish), as in ``system_bench.py``. Alternating trees spreads the
machine's drift over both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.system_bench import cpu_name, drain, inputs  # noqa: E402
from benchmarks.trees import cli_module  # noqa: E402
from ops.local.processes import die_with_parent, stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def drain_rate(tree: Path, models_dir: Path, jobs: int, extra: list[str]) -> float:
    with LocalRedis() as server:
        settings = Settings(broker_url=server.url, models_dir=models_dir, log_level="WARNING")
        with Client(settings) as client:
            queued = client.submit_many(
                "digits", inputs(models_dir, jobs, time.time()), variant="fp32", chunk_size=1
            )
            cmd = [
                sys.executable,
                "-m",
                cli_module(tree),
                "worker",
                "--models",
                "digits:fp32",
                "--metrics-port",
                "0",
            ]
            worker = subprocess.Popen(  # cwd=tree: that checkout's modules come first on sys.path
                [*cmd, *extra],
                cwd=tree,
                env={**os.environ, **settings.env()},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            try:
                return drain(client.wait_all(queued, timeout=900))
            finally:
                stop_process(worker)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--tree", type=Path, action="append", help="inferq checkout(s) whose worker runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--max-batch-size", type=int, help="the worker's override (1: batching off)")
    args = ap.parse_args()
    extra = [] if args.max_batch_size is None else ["--max-batch-size", str(args.max_batch_size)]
    print(f"# {cpu_name()}, {os.cpu_count()} cores; worker args {extra}", flush=True)
    trees = [t.resolve() for t in args.tree or [ROOT]]
    rates: dict[Path, list[float]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for t in trees:
            rates[t].append(drain_rate(t, args.models_dir.resolve(), args.jobs, extra))
            print(f"round {r}: {t}: {rates[t][-1]:.0f} inferences/s", flush=True)
    for t, rs in rates.items():
        print(f"{t}: {', '.join(f'{x:.0f}' for x in rs)} (mean {sum(rs) / len(rs):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
