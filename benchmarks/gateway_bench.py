"""The HTTP gateway against the direct client, in one run, on one Redis and one worker.

    .venv/bin/python benchmarks/gateway_bench.py [--model digits:fp32] [--duration 8] [--rounds 2]
        [--gateway-workers 1] [--batch 256] [--batch-requests 40] [--only load|batch]

Starts a private redis-server, one worker for the model and ``inferq gateway``, then
measures, alternating direct and HTTP so drift shows in both (issue 15's goals):

1. throughput at 64 jobs in flight (closed loop, fresh inputs): the direct ``Client``
   from 64 threads, and ``POST .../infer`` from 64 threads (``inferq bench --target``'s
   independent HTTP client, binary tensors): the ratio HTTP / direct, and the gateway's
   CPU per request (its process tree, from /proc);
2. a cached result through HTTP: p50/p99 of ``POST .../infer`` for an input whose result
   is stored (one request at a time);
3. the async-jobs path: ``POST .../jobs`` then ``GET /v2/jobs/{id}`` (``Prefer: wait``),
   one job at a time with fresh inputs, against the direct client's ``submit`` +
   ``wait``: the p50 overhead in ms;
4. batched requests: ``POST .../infer`` of ``--batch`` fresh inputs each (binary tensors),
   one request at a time, against the direct ``Client.infer_many`` of the same number:
   inputs/s and the gateway's CPU per input (its process tree, from /proc). ``--only
   batch`` runs this part alone, ``--only load`` part 1.

The load generator, the gateway, the worker and Redis share this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

from benchmarks.client_cpu import cpu_s  # noqa: E402
from benchmarks.redis_commands import process_tree  # noqa: E402
from ops.bench.http_target import HttpTarget  # noqa: E402
from ops.bench.run import BenchConfig, run_bench  # noqa: E402
from ops.local.redis_server import LocalRedis, free_port  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def pool_for(settings: Settings, model: str) -> np.ndarray:
    held = settings.models_dir / model / "data" / "heldout_x.npy"
    if held.is_file():
        return np.load(held)
    raise SystemExit(f"no {held}: run `inferq models build-examples --only {model}` first")


def closed(
    client: Any,
    model: str,
    variant: str,
    pool: np.ndarray,
    concurrency: int,
    duration: float,
    repeat: float = 0.0,
) -> dict[str, Any]:
    cfg = BenchConfig(
        model=model, variant=variant, concurrency=concurrency, duration_s=duration, repeat_fraction=repeat
    )
    return run_bench(client, cfg, pool).report()


def one_at_a_time(call: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def pct(v: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(v), p))


def binary_infer(model: str, variant: str, name: str, x: np.ndarray) -> tuple[str, bytes, dict[str, str]]:
    """A ``POST .../infer`` of the batch ``x`` as binary tensor data: path, body, headers."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return f"/v2/models/{model}/versions/{variant}/infer", header + raw, headers


def batched(
    client: Client,
    url: str,
    gateway_pid: int,
    model: str,
    variant: str,
    name: str,
    make: Any,
    batch: int,
    requests: int,
) -> None:
    """Part 4: requests of ``batch`` fresh inputs, one at a time, HTTP then direct."""
    with httpx.Client(base_url=url, timeout=120) as http:
        gw = process_tree(gateway_pid)
        xs = np.stack([make() for _ in range(batch * requests)])
        c0, t0 = cpu_s(gw), time.perf_counter()
        for i in range(requests):
            path, body, headers = binary_infer(model, variant, name, xs[i * batch : (i + 1) * batch])
            r = http.post(path, content=body, headers=headers)
            if r.status_code != 200:
                raise SystemExit(f"POST {path}: {r.status_code} {r.text[:300]}")
        wall, gw_cpu = time.perf_counter() - t0, cpu_s(gw) - c0
        n = batch * requests
        ys = np.stack([make() for _ in range(n)])
        t1 = time.perf_counter()
        for i in range(requests):
            client.infer_many(
                model, ys[i * batch : (i + 1) * batch], variant=variant, timeout=120
            ).raise_for_errors()
        direct = time.perf_counter() - t1
        print(
            f"batched, {requests} requests of {batch} fresh inputs one at a time: HTTP infer "
            f"{n / wall:,.0f} inputs/s, the gateway's CPU {gw_cpu / n * 1e6:.1f} µs per input; "
            f"direct infer_many {n / direct:,.0f} inputs/s; HTTP / direct {direct / wall:.2f}",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits:fp32")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calls", type=int, default=400, help="requests per one-at-a-time figure")
    ap.add_argument("--gateway-workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256, help="inputs per request in the batched part")
    ap.add_argument("--batch-requests", type=int, default=40, help="requests in the batched part, per round")
    ap.add_argument("--only", choices=["load", "batch"], help="run one part alone: 1 (load) or 4 (batch)")
    args = ap.parse_args()
    model, _, variant = args.model.partition(":")
    variant = variant or "fp32"
    models_dir = Path(os.environ.get("INFERQ_MODELS_DIR", ROOT / "models")).resolve()
    print(
        f"# {os.cpu_count()} cores; model {model}:{variant}; {args.duration:g} s per load; "
        f"gateway workers {args.gateway_workers}",
        flush=True,
    )
    with LocalRedis() as server:
        settings = Settings(broker_url=server.url, models_dir=models_dir, metrics_port=0)
        env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
        port = free_port()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "worker", "--models", f"{model}:{variant}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ops.cli",
                    "gateway",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.gateway_workers),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            ),
        ]
        try:
            with (
                Client(settings) as client,
                HttpTarget(f"http://127.0.0.1:{port}") as http,
                HttpTarget(f"http://127.0.0.1:{port}", path="jobs") as jobs,
            ):
                wait_for_workers(client, [f"{model}:{variant}"], timeout=120)
                for _ in range(100):
                    try:
                        info = http.model_info(model, variant)
                        break
                    except Exception:
                        time.sleep(0.3)
                http.set_input_name(info)
                jobs.set_input_name(info)
                pool = pool_for(settings, model)
                rng = np.random.default_rng(int(time.time()))

                def fresh() -> np.ndarray:
                    x: np.ndarray = pool[rng.integers(len(pool))] + np.float32(rng.uniform(0, 1e-3))
                    return x.astype(pool.dtype)

                # warm both paths (catalogue, connections, the worker's first batches)
                closed(client, model, variant, pool, 8, 1.0)
                closed(http, model, variant, pool, 8, 1.0)

                def part4() -> None:
                    for _ in range(args.rounds):
                        batched(
                            client,
                            f"http://127.0.0.1:{port}",
                            procs[1].pid,
                            model,
                            variant,
                            info.inputs[0].name,
                            fresh,
                            args.batch,
                            args.batch_requests,
                        )

                if args.only == "batch":
                    part4()
                    return 0
                ratios = []
                for r in range(args.rounds):
                    d = closed(client, model, variant, pool, 64, args.duration)
                    gw = process_tree(procs[1].pid)
                    c0 = cpu_s(gw)
                    h = closed(http, model, variant, pool, 64, args.duration)
                    h_cpu_ms = (cpu_s(gw) - c0) / max(1, h["completed"]) * 1e3
                    ratio = h["throughput"] / d["throughput"]
                    ratios.append(ratio)
                    for name, rep in (("direct Client", d), ("HTTP infer", h)):
                        e2e = rep["latency_ms"]["end_to_end"]
                        print(
                            f"round {r + 1}  64 in flight  {name:<13} {rep['throughput']:7.0f} jobs/s  "
                            f"p50 {e2e['p50']:6.1f}  p99 {e2e['p99']:6.1f} ms  errors {rep['errors']}",
                            flush=True,
                        )
                    print(
                        f"round {r + 1}  HTTP / direct throughput: {ratio:.2f}; the gateway's CPU "
                        f"{h_cpu_ms:.2f} ms per request",
                        flush=True,
                    )

                if args.only == "load":
                    return 0
                x = fresh()
                http.submit(model, x, variant=variant).wait()
                hits = one_at_a_time(lambda i: http.submit(model, x, variant=variant).wait(), args.calls)
                direct_hits = one_at_a_time(
                    lambda i: client.submit(model, x, variant=variant).wait(), args.calls
                )
                print(
                    f"cached result, one at a time: HTTP infer p50 {pct(hits, 50):.2f} p99 {pct(hits, 99):.2f} ms;"
                    f" direct Client p50 {pct(direct_hits, 50):.2f} p99 {pct(direct_hits, 99):.2f} ms",
                    flush=True,
                )

                for r in range(args.rounds):
                    inputs = [fresh() for _ in range(2 * args.calls)]
                    direct = one_at_a_time(
                        lambda i, xs=inputs: client.submit(model, xs[i], variant=variant).wait(30), args.calls
                    )
                    via = one_at_a_time(
                        lambda i, xs=inputs: jobs.submit(model, xs[args.calls + i], variant=variant).wait(30),
                        args.calls,
                    )
                    print(
                        f"round {r + 1}  one job at a time, fresh inputs: direct submit+wait p50 "
                        f"{pct(direct, 50):.2f} p99 {pct(direct, 99):.2f} ms; POST jobs + GET p50 "
                        f"{pct(via, 50):.2f} p99 {pct(via, 99):.2f} ms; overhead p50 "
                        f"{pct(via, 50) - pct(direct, 50):+.2f} ms",
                        flush=True,
                    )
                part4()
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
