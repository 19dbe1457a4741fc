"""Worker RSS while 100k jobs wait in Redis: prefetch is bounded, so RSS stays flat.

    .venv/bin/python benchmarks/prefetch_rss.py [--jobs 100000]

Captures one real job message, pushes ``--jobs`` copies (each with its own task id and
delivery tag) straight onto the queue list, starts one worker, and samples its RSS and
kombu's unacked count every 0.5 s while it drains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.system_bench import cpu_name, worker_cmd  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.kombu_layout import UNACKED_INDEX  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    with LocalRedis() as rs:
        settings = Settings(broker_url=rs.url, models_dir=args.models_dir, log_level="WARNING")
        r = redis.Redis.from_url(rs.url)
        x = np.load(args.models_dir / "digits" / "data" / "heldout_x.npy")[0]
        with Client(settings) as c:
            c.submit("digits", x, variant="fp32", no_cache=True)
        template = json.loads(r.rpop("inferq.digits.fp32"))
        t0 = time.time()
        pipe = r.pipeline(transaction=False)
        for i in range(args.jobs):
            m = dict(template)
            jid = uuid.uuid4().hex
            m["headers"] = {**template["headers"], "id": jid, "root_id": jid}
            m["properties"] = {
                **template["properties"],
                "correlation_id": jid,
                "delivery_tag": str(uuid.uuid4()),
            }
            pipe.lpush("inferq.digits.fp32", json.dumps(m))
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores")
        print(
            f"pushed {r.llen('inferq.digits.fp32')} jobs in {time.time() - t0:.1f} s; Redis used {r.info('memory')['used_memory'] / 2**20:.0f} MiB"
        )
        w = subprocess.Popen(
            worker_cmd("digits:fp32"),
            env={**os.environ, **settings.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        samples = []
        start = time.time()
        try:
            while r.llen("inferq.digits.fp32") > 0 and time.time() - start < 600:
                time.sleep(0.5)
                samples.append(
                    (
                        time.time() - start,
                        r.llen("inferq.digits.fp32"),
                        int(r.zcard(UNACKED_INDEX)),
                        rss_mib(w.pid),
                    )
                )
        finally:
            w.terminate()
            w.wait()
    print("| t s | queued | unacked | worker RSS MiB |\n|---|---|---|---|")
    step = max(1, len(samples) // 12)
    for t, q, u, m in samples[::step] + samples[-1:]:
        print(f"| {t:.1f} | {q} | {u} | {m:.0f} |")
    steady = [m for t, q, u, m in samples if t > 5]
    print(
        f"RSS after the first 5 s: min {min(steady):.0f} MiB, max {max(steady):.0f} MiB; max unacked {max(s[2] for s in samples)}"
    )


if __name__ == "__main__":
    main()
