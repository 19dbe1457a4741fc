"""Through-the-system figures for docs/benchmarks.md, all in one run on one machine.

    .venv/bin/python benchmarks/system_bench.py [--jobs 2000] [--models-dir models]

Starts a private redis-server, then in turn an inferq worker and a plain-Celery
baseline worker (one process each, solo pool), and measures:
- saturated single-input digits fp32 jobs/s, inferq vs the baseline (JSON payload,
  one inference per task): the queue is filled faster than it drains, and the drain
  rate is read from the workers' own stamps (first receive to last finish);
- cache-hit round trip (submit -> result for an input already cached), p50/p99;
- what waiting adds: the time from the worker's ``finished_at`` to the client seeing
  the result, for one job at a time, p50/p99;
- RSS of a worker serving only TFLite models (digits + mobilenet_v2, fp32 + int8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producers.client import Client  # noqa: E402
from producers.local_redis import LocalRedis  # noqa: E402
from producers.stats import summarize  # noqa: E402
from producers.status import collect, wait_for_workers  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def inputs(models_dir: Path, n: int) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")
    reps = int(np.ceil(n / len(x)))
    rng = np.random.default_rng(0)
    xs = np.concatenate([x] * reps)[:n]
    return (xs + rng.uniform(0, 1e-3, xs.shape)).astype(np.float32)  # unique: no cache hits


def bench_inferq(settings: Settings, xs: np.ndarray, logdir: Path) -> dict[str, float]:
    w = spawn([sys.executable, "-m", "producers.cli", "worker", "--models", "digits:fp32"], settings.env(), logdir / "inferq-worker.log")
    try:
        with Client(settings) as c:
            wait_for_workers(c, ["digits:fp32"], timeout=120)
            for x in xs[:50]:  # warm up
                c.submit("digits", x, no_cache=True).wait(timeout=30)
            t0 = time.perf_counter()
            jobs = [c.submit("digits", x) for x in xs]
            submit_s = time.perf_counter() - t0
            results = c.wait_all(jobs, timeout=600)
            wall = time.perf_counter() - t0
            ok = [r for r in results if not isinstance(r, Exception)]
            assert len(ok) == len(xs), f"{len(xs) - len(ok)} errors"
            first = min(r.timing.received_at for r in ok)
            last = max(r.timing.finished_at for r in ok)
            # cache hits: the same inputs again
            hits = []
            for x in xs[:500]:
                t = time.perf_counter()
                job = c.submit("digits", x)
                job.wait(timeout=10)
                assert job.cached
                hits.append((time.perf_counter() - t) * 1e3)
            # what waiting adds, one job at a time
            adds = []
            for x in xs[:300]:
                r = c.submit("digits", x, no_cache=True).wait(timeout=10)
                assert r.timing.end_to_end_ms is not None
                seen_at = r.timing.enqueued_at + r.timing.end_to_end_ms / 1e3
                adds.append((seen_at - r.timing.finished_at) * 1e3)
        return {
            "drain_jobs_s": len(ok) / (last - first),
            "wall_jobs_s": len(ok) / wall,
            "submit_jobs_s": len(xs) / submit_s,
            **{f"hit_{k}": v for k, v in summarize(hits).items()},
            **{f"wait_adds_{k}": v for k, v in summarize(adds).items()},
        }
    finally:
        stop(w)


def bench_baseline(url: str, models_dir: Path, xs: np.ndarray, logdir: Path) -> dict[str, float]:
    env = {"BASELINE_BROKER_URL": url, "BASELINE_MODEL": str(models_dir / "digits" / "fp32" / "model.tflite")}
    cmd = [sys.executable, "-m", "celery", "-A", "benchmarks.baseline_celery", "worker", "-P", "solo", "-c", "1", "-Q", "baseline", "--without-gossip", "--without-mingle", "--loglevel=WARNING"]
    w = spawn(cmd, env, logdir / "baseline-worker.log")
    app = Celery("client", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                app.send_task("baseline.predict", args=[xs[0].tolist()], queue="baseline").get(timeout=2)
                break
            except Exception:
                time.sleep(0.5)
        for x in xs[:50]:
            app.send_task("baseline.predict", args=[x.tolist()], queue="baseline").get(timeout=30)
        t0 = time.perf_counter()
        handles = [app.send_task("baseline.predict", args=[x.tolist()], queue="baseline") for x in xs]
        results = [h.get(timeout=600) for h in handles]
        wall = time.perf_counter() - t0
        first = min(r["received_at"] for r in results)
        last = max(r["finished_at"] for r in results)
        return {"drain_jobs_s": len(results) / (last - first), "wall_jobs_s": len(results) / wall}
    finally:
        stop(w)


def worker_rss(settings: Settings, logdir: Path) -> float:
    models = ["digits:fp32", "digits:int8", "mobilenet_v2:fp32", "mobilenet_v2:int8"]
    w = spawn([sys.executable, "-m", "producers.cli", "worker", "--models", ",".join(models)], settings.env(), logdir / "rss-worker.log")
    try:
        with Client(settings) as c:
            wait_for_workers(c, models, timeout=120)
            rng = np.random.default_rng(1)
            for m in models:
                name, variant = m.split(":")
                shape = (28, 28, 1) if name == "digits" else (224, 224, 3)
                for _ in range(5):
                    c.submit(name, rng.uniform(0, 1, shape).astype(np.float32), variant=variant, no_cache=True).wait(timeout=60)
            time.sleep(6)  # one heartbeat after the work
            return max(w_["rss_bytes"] for w_ in collect(c)["workers"]) / 2**20
    finally:
        stop(w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    xs = inputs(args.models_dir, args.jobs)
    with LocalRedis() as redis_server:
        settings = Settings(broker_url=redis_server.url, models_dir=args.models_dir)
        base = bench_baseline(redis_server.url.replace("/0", "/1"), args.models_dir, xs, logdir)
        inferq = bench_inferq(settings, xs, logdir)
        rss = worker_rss(settings, logdir) if (args.models_dir / "mobilenet_v2").is_dir() else float("nan")
    out = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "jobs": args.jobs, "baseline": base, "inferq": inferq, "tflite_worker_rss_mib": rss}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}; {args.jobs} single-input digits fp32 jobs, 1 worker process each")
    print(f"| | baseline (plain Celery, JSON) | inferq | ratio |\n|---|---|---|---|")
    for k in ("drain_jobs_s", "wall_jobs_s"):
        print(f"| {k} | {base[k]:.0f} | {inferq[k]:.0f} | {inferq[k] / base[k]:.2f}x |")
    print(f"inferq submit rate: {inferq['submit_jobs_s']:.0f} jobs/s")
    print(f"cache-hit round trip: p50 {inferq['hit_p50']:.2f} ms, p99 {inferq['hit_p99']:.2f} ms")
    print(f"what wait() adds after the worker finished: p50 {inferq['wait_adds_p50']:.2f} ms, p99 {inferq['wait_adds_p99']:.2f} ms")
    print(f"TFLite-only worker RSS (digits + mobilenet_v2, fp32 + int8): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
