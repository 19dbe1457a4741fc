"""Through-the-system figures for docs/benchmarks.md, all in one run on one machine.

    .venv/bin/python benchmarks/system_bench.py [--jobs 3000] [--models-dir models]

Starts a private redis-server and, in turn, one worker process per configuration
(solo pool), always the same way: the queue is filled first, then the worker starts,
and its drain rate is read from the workers' own stamps (first receive to last
finish), so the producer's speed on these two shared cores does not cap it.

- baseline: a plain Celery task, JSON payload, one inference per task (what a user
  would write instead, benchmarks/baseline_celery.py);
- inferq single-input jobs, batching on (the model's max_batch_size) and off (1);
- inferq bulk: 64 inputs per message (``submit_many``);
- then, with a worker running: cache-hit round trip, what ``wait()`` adds after the
  worker's ``finished_at``, and the RSS of a TFLite-only worker.
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
from typing import Any

import numpy as np
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.local.processes import stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.stats import summarize  # noqa: E402
from ops.status import collect, wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT
    )


def stop(p: subprocess.Popen[bytes]) -> None:
    stop_process(p)


def inputs(models_dir: Path, n: int, salt: float) -> np.ndarray:
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")
    xs = np.concatenate([x] * int(np.ceil(n / len(x))))[:n]
    rng = np.random.default_rng(int(salt * 1000))
    return (xs + rng.uniform(0, 1e-3, xs.shape)).astype(np.float32)  # unique: no cache hits


def worker_cmd(models: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ops.cli",
        "worker",
        "--models",
        models,
        "--metrics-port",
        "0",
        *extra,
    ]


def drain(results: list[Any]) -> float:
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == len(results), (
        f"{len(results) - len(ok)} errors: {next(r for r in results if isinstance(r, Exception))}"
    )
    first = min(r.timing.received_at for r in ok)
    last = max(r.timing.finished_at for r in ok)
    return len(ok) / (last - first)


def bench_inferq(
    settings: Settings, xs: np.ndarray, logdir: Path, *, bulk: int, extra: list[str], name: str
) -> dict[str, float]:
    with Client(settings) as c:
        t0 = time.perf_counter()
        jobs = c.submit_many("digits", xs, variant="fp32", chunk_size=bulk)
        submit_rate = len(xs) / (time.perf_counter() - t0)
        w = spawn(worker_cmd("digits:fp32", *extra), settings.env(), logdir / f"{name}.log")
        try:
            results = c.wait_all(jobs, timeout=900)
        finally:
            stop(w)
        sizes = [r.timing.batch_size for r in results if not isinstance(r, Exception)]
        return {"inferences_s": drain(results), "submit_s": submit_rate, "mean_batch": float(np.mean(sizes))}


def bench_baseline(url: str, models_dir: Path, xs: np.ndarray, logdir: Path) -> dict[str, float]:
    env = {"BASELINE_BROKER_URL": url, "BASELINE_MODEL": str(models_dir / "digits" / "fp32" / "model.tflite")}
    app = Celery("client", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    t0 = time.perf_counter()
    handles = [app.send_task("baseline.predict", args=[x.tolist()], queue="baseline") for x in xs]
    submit_rate = len(xs) / (time.perf_counter() - t0)
    cmd = [sys.executable, "-m", "celery", "-A", "benchmarks.baseline_celery", "worker", "-P", "solo", "-c", "1",
           "-Q", "baseline", "--without-gossip", "--without-mingle", "--loglevel=WARNING"]  # fmt: skip
    w = spawn(cmd, env, logdir / "baseline.log")
    try:
        results = [h.get(timeout=900) for h in handles]
    finally:
        stop(w)
    first = min(r["received_at"] for r in results)
    last = max(r["finished_at"] for r in results)
    return {"inferences_s": len(results) / (last - first), "submit_s": submit_rate, "mean_batch": 1.0}


def bench_latency_extras(settings: Settings, xs: np.ndarray, logdir: Path) -> dict[str, float]:
    w = spawn(worker_cmd("digits:fp32"), settings.env(), logdir / "extras.log")
    try:
        with Client(settings) as c:
            wait_for_workers(c, ["digits:fp32"], timeout=120)
            c.wait_all(c.submit_many("digits", xs[:500]), timeout=120)  # now cached
            hits = []
            for x in xs[:500]:
                t = time.perf_counter()
                job = c.submit("digits", x)
                job.wait(timeout=10)
                assert job.cached
                hits.append((time.perf_counter() - t) * 1e3)
            adds = []
            for x in xs[:300]:
                r = c.submit("digits", x, no_cache=True).wait(timeout=10)
                assert r.timing.end_to_end_ms is not None
                seen_at = r.timing.enqueued_at + r.timing.end_to_end_ms / 1e3
                adds.append((seen_at - r.timing.finished_at) * 1e3)
        return {
            **{f"hit_{k}": v for k, v in summarize(hits).items()},
            **{f"wait_adds_{k}": v for k, v in summarize(adds).items()},
        }
    finally:
        stop(w)


def worker_rss(settings: Settings, logdir: Path) -> float:
    models = ["digits:fp32", "digits:int8", "mobilenet_v2:fp32", "mobilenet_v2:int8"]
    w = spawn(worker_cmd(",".join(models)), settings.env(), logdir / "rss.log")
    try:
        with Client(settings) as c:
            wait_for_workers(c, models, timeout=120)
            rng = np.random.default_rng(1)
            for m in models:
                name, variant = m.split(":")
                shape = (28, 28, 1) if name == "digits" else (224, 224, 3)
                xs = rng.uniform(0, 1, (16, *shape)).astype(np.float32)
                c.wait_all(c.submit_many(name, xs, variant=variant, no_cache=True), timeout=120)
            time.sleep(6)  # one heartbeat after the work
            return max(w_["rss_bytes"] for w_ in collect(c)["workers"]) / 2**20
    finally:
        stop(w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "jobs": args.jobs}
    with LocalRedis() as rs:
        settings = Settings(broker_url=rs.url, models_dir=args.models_dir, log_level="WARNING")
        runs = {
            "baseline": lambda: bench_baseline(rs.url.replace("/0", "/1"), args.models_dir, inputs(args.models_dir, args.jobs, 1), logdir),
            "inferq, batching off (max_batch_size 1)": lambda: bench_inferq(
                settings, inputs(args.models_dir, args.jobs, 2), logdir, bulk=1, extra=["--max-batch-size", "1"], name="nobatch"),
            "inferq, batching on": lambda: bench_inferq(settings, inputs(args.models_dir, args.jobs, 3), logdir, bulk=1, extra=[], name="batch"),
            "inferq, bulk 64 inputs/message": lambda: bench_inferq(
                settings, inputs(args.models_dir, 10 * args.jobs, 4), logdir, bulk=64, extra=[], name="bulk"),
        }  # fmt: skip
        out["throughput"] = {name: run() for name, run in runs.items()}
        out["extras"] = bench_latency_extras(settings, inputs(args.models_dir, 500, 5), logdir)
        out["tflite_worker_rss_mib"] = (
            worker_rss(settings, logdir) if (args.models_dir / "mobilenet_v2").is_dir() else None
        )
    if args.json:
        print(json.dumps(out, indent=2))
        return
    base = out["throughput"]["baseline"]["inferences_s"]
    print(
        f"machine: {out['machine']}; digits fp32, {args.jobs} jobs (bulk: {10 * args.jobs} inputs), 1 worker process each"
    )
    print(
        "| configuration | inferences/s (drain) | × baseline | mean batch | producer submit rate /s |\n|---|---|---|---|---|"
    )
    for name, r in out["throughput"].items():
        print(
            f"| {name} | {r['inferences_s']:.0f} | {r['inferences_s'] / base:.2f}× | {r['mean_batch']:.1f} | {r['submit_s']:.0f} |"
        )
    e = out["extras"]
    print(f"\ncache-hit round trip: p50 {e['hit_p50']:.2f} ms, p99 {e['hit_p99']:.2f} ms")
    print(
        f"what wait() adds after the worker's finished_at: p50 {e['wait_adds_p50']:.2f} ms, p99 {e['wait_adds_p99']:.2f} ms"
    )
    rss = out["tflite_worker_rss_mib"]
    shown = "not measured (mobilenet_v2 is not built)" if rss is None else f"{rss:.0f} MiB"
    print(f"TFLite-only worker RSS (digits + mobilenet_v2, fp32 + int8): {shown}")


if __name__ == "__main__":
    main()
