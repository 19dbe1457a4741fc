"""How long faults cost: a killed worker's jobs taken over, and a Redis crash with jobs queued.

    python benchmarks/fault_recovery.py [--jobs 3000] [--visibility 60] [--lease 5]
        [--only takeover|redis-crash] [--models-dir DIR]

Each scenario runs on a private ``redis-server`` (AOF everysec) with real worker
processes serving digits fp32 (built into a temporary folder if ``--models-dir`` has
none). Printed: seconds from the fault to the last job done, messages taken back, and
whether every job ended with a result.

1. takeover: two workers; the survivor is paused until the other has taken the queue
   and is SIGKILLed mid-batch; then the survivor takes over. The *stall* is the time
   from the kill until the last job the killed worker held (read from its holder
   records, ``tasks/liveness.py``) is done elsewhere: about the heartbeat lease
   (``--lease``), whatever the visibility timeout (default: the settings' 60 s).
2. redis-crash: the worker is paused with jobs queued and a client waiting; Redis is
   SIGKILLed 1.5 s later and restarted on the same folder; then the worker resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.local.redis_server import LocalRedis  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.keys import result_key  # noqa: E402
from tasks.kombu_layout import UNACKED, UNACKED_INDEX, decode_unacked_entry  # noqa: E402
from tasks.liveness import HOLDERS  # noqa: E402
from tasks.settings import Settings  # noqa: E402
from tasks.wire import Result  # noqa: E402
from tests.conftest import WorkerProcess  # noqa: E402
from workers.broker.envelope import parse_message  # noqa: E402


def inputs(models_dir: Path, n: int) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")
    x = np.resize(x, (n, *x.shape[1:]))
    jitter = np.float32(time.time() % 1) * 1e-3 + np.arange(n, dtype=np.float32)[:, None, None, None] * 1e-6
    return (x + jitter).astype(np.float32)


def worker(settings: Settings, log: Path, *extra: str) -> WorkerProcess:
    w = WorkerProcess(settings, ["digits:fp32"], log, *extra)
    with Client(settings) as c:
        w.wait_ready(c)
    return w


def held_jobs(client: Client, pid: int) -> list[str]:
    """The job ids in the messages the worker process ``pid`` is recorded as holding."""
    tags = [t for t, w in client.broker.hgetall(HOLDERS).items() if f".{pid}.".encode() in w]
    out: list[str] = []
    for entry in client.broker.hmget(UNACKED, tags) if tags else []:
        if entry is not None:
            message, _, _ = decode_unacked_entry(entry)
            out += [jid for jid, _ in parse_message(json.dumps(message).encode())]
    return out


def takeover(models_dir: Path, n: int, vt: int, lease: float, tmp: Path) -> dict[str, object]:
    with LocalRedis(appendonly=True, workdir=tmp / "r1") as rs:
        settings = Settings(
            broker_url=rs.url, models_dir=models_dir, visibility_timeout_s=vt, lease_s=lease, metrics_port=0
        )
        with Client(settings) as client:
            doomed = worker(settings, tmp / "doomed.log", "--max-batch-size", "16")
            survivor = worker(settings, tmp / "survivor.log")
            for w in (doomed, survivor):
                os.kill(w.proc.pid, signal.SIGSTOP)
            jobs = client.submit_many("digits", inputs(models_dir, n), variant="fp32", chunk_size=1)
            keys = [result_key(j.id) for j in jobs]
            os.kill(doomed.proc.pid, signal.SIGCONT)
            mine = f".{doomed.proc.pid}.".encode()
            while client.backend.exists(*keys) < 100 or not any(
                mine in w for w in client.broker.hvals(HOLDERS)
            ):
                time.sleep(0.002)
            doomed.proc.kill()
            killed_at = time.time()
            doomed.proc.wait()
            held = client.broker.zcard(UNACKED_INDEX)
            held_ids = set(held_jobs(client, doomed.proc.pid))
            done_before = client.backend.exists(*keys)
            os.kill(survivor.proc.pid, signal.SIGCONT)
            results = client.wait_all(jobs, timeout=vt + 120)
            last = max(r.timing.finished_at for r in results if isinstance(r, Result))
            held_done = [
                r.timing.finished_at for r in results if isinstance(r, Result) and r.job_id in held_ids
            ]
            survivor.stop()
            doomed.stop()
            taken = [ln for ln in survivor.log_text().splitlines() if "took back" in ln]
    return {
        "scenario": f"takeover (visibility {vt} s, lease {lease:g} s)",
        "jobs": n,
        "done before the kill": done_before,
        "unacked at the kill": held,
        "jobs the killed worker held": len(held_ids),
        "all results": all(isinstance(r, Result) for r in results),
        # A held job may have been stored before the kill (killed between store and ack):
        # it runs again after the take-back, and its client already had the first result.
        "held jobs already stored at the kill": sum(t <= killed_at for t in held_done),
        "stall: seconds kill -> last held job done elsewhere": round(max(held_done) - killed_at, 2),
        "seconds kill -> last job done": round(last - killed_at, 2),
        "take-back log lines": taken[:2],
    }


def redis_crash(models_dir: Path, n: int, tmp: Path) -> dict[str, object]:
    rs = LocalRedis(appendonly=True, workdir=tmp / "r2").start()
    try:
        settings = Settings(broker_url=rs.url, models_dir=models_dir, metrics_port=0)
        with Client(settings) as client:
            w = worker(settings, tmp / "w.log")
            os.kill(w.proc.pid, signal.SIGSTOP)
            jobs = client.submit_many("digits", inputs(models_dir, n), variant="fp32", chunk_size=8)
            out: list[object] = []
            waiter = threading.Thread(target=lambda: out.extend(client.wait_all(jobs, timeout=180)))
            waiter.start()
            time.sleep(1.5)
            assert rs.proc is not None
            rs.proc.kill()
            rs.proc.wait()
            t0 = time.time()
            rs.start()
            restarted_s = time.time() - t0
            os.kill(w.proc.pid, signal.SIGCONT)
            resumed_at = time.time()
            waiter.join()
            last = max(r.timing.finished_at for r in out if isinstance(r, Result))  # type: ignore[union-attr]
            w.stop()
    finally:
        rs.stop()
    return {
        "scenario": "redis crash + restart (AOF everysec)",
        "jobs": n,
        "redis restart s": round(restarted_s, 2),
        "all results": len(out) == n and all(isinstance(r, Result) for r in out),
        "seconds resume -> last job done": round(last - resumed_at, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--visibility", type=int, default=Settings().visibility_timeout_s)
    ap.add_argument("--lease", type=float, default=Settings().lease_s)
    ap.add_argument("--only", choices=["takeover", "redis-crash"])
    ap.add_argument("--models-dir", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferq-faults-") as t:
        tmp = Path(t)
        models = args.models_dir or tmp / "models"
        if not (models / "digits" / "fp32" / "meta.json").is_file():
            subprocess.run(
                [sys.executable, "-m", "ops.cli", "models", "build-examples", "--only", "digits"],
                env={**os.environ, "INFERQ_MODELS_DIR": str(models)},
                check=True,
                cwd=ROOT,
            )
        if args.only in (None, "takeover"):
            print(takeover(models, args.jobs, args.visibility, args.lease, tmp))
        if args.only in (None, "redis-crash"):
            print(redis_crash(models, 400, tmp))


if __name__ == "__main__":
    main()
