"""What one client call costs, per checkout of inferq, on a private Redis with no worker.

    .venv/bin/python benchmarks/client_calls.py [--tree /tmp/inferq-old] [--calls 2000] [--threads 16]

Measures, from the caller's side: a cache-hit ``submit`` (the input's result is
stored), a ``status`` of that job, and a ``submit`` of a new input (claim + send; no
worker runs it), each from one thread and from ``--threads`` threads sharing one
client. ``--tree`` runs another checkout's client code (its modules first on
``sys.path``), so two trees can be compared in one session.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    import numpy as np

    try:
        from ops.local.redis_server import LocalRedis
    except ImportError:  # before the architecture change (issue 13)
        from producers.local_redis import LocalRedis  # type: ignore[no-redef]
    from producers.client import Client
    from tasks import constants as C
    from tasks.schema import ModelInfo, TensorSpec, Timing
    from tasks.settings import Settings

    info = ModelInfo(
        name="calls",
        variant="fp32",
        version="1",
        runtime="litert",
        inputs=(TensorSpec("x", (16,), "float32", "float32"),),
        outputs=(TensorSpec("y", (4,), "float32", "float32"),),
    )
    print(f"# tree {args.tree.resolve()}; {os.cpu_count()} cores; {args.calls} calls per figure", flush=True)
    with (
        LocalRedis() as server,
        Client(Settings(broker_url=server.url, models_dir=Path(tempfile.mkdtemp()))) as c,
    ):
        try:
            from tasks.wire import ModelAnnouncement, Result

            c.backend.hset(C.MODELS_KEY, info.key, ModelAnnouncement.encode(info))
        except ImportError:  # before tasks/wire
            import json

            from tasks.schema import Result  # type: ignore[attr-defined,no-redef]

            c.backend.hset(C.MODELS_KEY, info.key, json.dumps(info.to_dict()))
        x = np.ones(16, np.float32)
        first = c.submit("calls", x, variant="fp32")
        timing = Timing.build(
            enqueued_at=1, received_at=1, started_at=1, compute_done_at=1, finished_at=1, batch_size=1
        )
        doc = Result(first.id, "calls", "fp32", "1", {"y": np.zeros(4, np.float32)}, timing).to_wire()
        import orjson

        meta = {"status": "SUCCESS", "result": doc, "traceback": None, "children": [], "task_id": first.id}
        c.backend.set(f"{C.RESULT_KEY_PREFIX}{first.id}", orjson.dumps(meta))
        rng = np.random.default_rng(0)

        def cache_hit() -> None:
            assert c.submit("calls", x, variant="fp32").cached

        def status() -> None:
            c.status(first.id)

        def new_input() -> None:
            c.submit("calls", rng.standard_normal(16).astype(np.float32), variant="fp32")

        for name, call in (
            ("cache-hit submit", cache_hit),
            ("status", status),
            ("submit, new input", new_input),
        ):
            for threads in (1, args.threads):
                lat: list[float] = []
                lock = threading.Lock()

                def run(n: int, call=call, lat=lat, lock=lock) -> None:  # type: ignore[no-untyped-def]
                    mine = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        call()
                        mine.append((time.perf_counter() - t0) * 1e3)
                    with lock:
                        lat.extend(mine)

                per = max(1, args.calls // threads)
                workers = [threading.Thread(target=run, args=(per,)) for _ in range(threads)]
                t0 = time.perf_counter()
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                took = time.perf_counter() - t0
                lat.sort()
                print(
                    f"{name:<20} threads {threads:>2}: {len(lat) / took:8.0f} calls/s  "
                    f"p50 {statistics.median(lat):6.2f} ms  p99 {lat[int(0.99 * (len(lat) - 1))]:6.2f} ms",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
