"""The client's CPU per input in bulk, sync ``Client`` and ``AsyncClient`` (issue 18).

    .venv/bin/python benchmarks/bulk_client_cpu.py [--inputs 30000] [--chunk 256] [--rounds 2] [--models-dir models]
        [--clients sync,async,sync-stacked,async-stacked]

One private redis-server and one worker (digits fp32, one thread, started and warmed up
first), then per round and per client: ``submit_many`` of ``--inputs`` unique inputs in
messages of ``--chunk``, ``wait_all``, and every result's outputs and timing read (what
a caller does with them: the figure must not flatter a client that defers work until
it is touched). Reported per run: the client's CPU per input (``time.process_time``,
all its threads: the listener's too), inputs/s end to end, and the worker's and Redis's
CPU per input over the same stretch. The clients alternate within a round, so all meet
the same neighbours' load. ``sync-stacked`` and ``async-stacked`` send the same inputs
with ``infer_many`` and read its stacked outputs and timing instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.client_cpu import cpu_s  # noqa: E402
from benchmarks.redis_commands import process_tree  # noqa: E402
from benchmarks.system_bench import inputs, spawn, stop, worker_cmd  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.async_client import AsyncClient  # noqa: E402
from producers.bulk import BulkResult  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402


def touch(results: list[Any]) -> float:
    """Read what a caller reads: each output and the timing (errors fail the run)."""
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
    total = 0.0
    for r in results:
        total += float(r.outputs["probs"][0]) + (r.timing.end_to_end_ms or 0.0)
    return total


Probe = Callable[[], tuple[float, float, float]]  # CPU seconds: client, worker, redis


def sync_run(settings: Settings, xs: np.ndarray, chunk: int, probe: Probe) -> dict[str, float]:
    with Client(settings) as c:
        c.wait_all(c.submit_many("digits", xs[:256], chunk_size=chunk, no_cache=True), timeout=120)
        cpu0, t0 = probe(), time.perf_counter()
        jobs = c.submit_many("digits", xs, variant="fp32", chunk_size=chunk)
        submitted = time.perf_counter() - t0
        touch(c.wait_all(jobs, timeout=900))
        return figures(len(xs), cpu0, probe(), submitted, time.perf_counter() - t0)


def async_run(settings: Settings, xs: np.ndarray, chunk: int, probe: Probe) -> dict[str, float]:
    async def run() -> dict[str, float]:
        async with AsyncClient(settings) as c:
            warm = await c.submit_many("digits", xs[:256], chunk_size=chunk, no_cache=True)
            await c.wait_all(warm, timeout=120)
            cpu0, t0 = probe(), time.perf_counter()
            jobs = await c.submit_many("digits", xs, variant="fp32", chunk_size=chunk)
            submitted = time.perf_counter() - t0
            touch(await c.wait_all(jobs, timeout=900))
            return figures(len(xs), cpu0, probe(), submitted, time.perf_counter() - t0)

    return asyncio.run(run())


def stacked_run(settings: Settings, xs: np.ndarray, chunk: int, probe: Probe) -> dict[str, float]:
    """``Client.infer_many``: the same inputs, stacked outputs back (no ``Result`` each)."""
    with Client(settings) as c:
        c.infer_many("digits", xs[:256], chunk_size=chunk, no_cache=True, timeout=120)
        cpu0, t0 = probe(), time.perf_counter()
        touch_stacked(c.infer_many("digits", xs, variant="fp32", chunk_size=chunk, timeout=900))
        return figures(len(xs), cpu0, probe(), float("nan"), time.perf_counter() - t0)


def async_stacked_run(settings: Settings, xs: np.ndarray, chunk: int, probe: Probe) -> dict[str, float]:
    async def run() -> dict[str, float]:
        async with AsyncClient(settings) as c:
            await c.infer_many("digits", xs[:256], chunk_size=chunk, no_cache=True, timeout=120)
            cpu0, t0 = probe(), time.perf_counter()
            got = await c.infer_many("digits", xs, variant="fp32", chunk_size=chunk, timeout=900)
            touch_stacked(got)
            return figures(len(xs), cpu0, probe(), float("nan"), time.perf_counter() - t0)

    return asyncio.run(run())


def touch_stacked(got: BulkResult) -> float:
    """``touch`` for a ``BulkResult``: every row's first output and end to end."""
    got.raise_for_errors()
    return float(got.outputs["probs"][:, 0].sum() + got.timing["end_to_end_ms"].sum())


def figures(
    n: int, cpu0: tuple[float, float, float], cpu1: tuple[float, float, float], submit_s: float, e2e_s: float
) -> dict[str, float]:
    us = [(b - a) / n * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "client_us": us[0],
        "worker_us": us[1],
        "redis_us": us[2],
        "inputs_s": n / e2e_s,
        "submit_s": submit_s,
        "e2e_s": e2e_s,
    }


RUNS: dict[str, Callable[[Settings, np.ndarray, int, Probe], dict[str, float]]] = {
    "sync": sync_run,
    "async": async_run,
    "sync-stacked": stacked_run,
    "async-stacked": async_stacked_run,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=30_000)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--clients",
        default="sync,async",
        help="comma-separated: sync, async (submit_many + wait_all), sync-stacked, async-stacked (infer_many)",
    )
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kinds = [k for k in args.clients.split(",") if k]
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with LocalRedis() as rs:
        settings = Settings(broker_url=rs.url, models_dir=args.models_dir, log_level="WARNING")
        w = spawn(worker_cmd("digits:fp32", "--threads", "1"), settings.env(), logdir / "bulk_client_cpu.log")
        try:
            with Client(settings) as c:
                wait_for_workers(c, ["digits:fp32"], timeout=120)
            wpids = process_tree(w.pid)
            rpids = {rs.proc.pid} if rs.proc else set()

            def probe() -> tuple[float, float, float]:
                return time.process_time(), cpu_s(wpids), cpu_s(rpids)

            for rnd in range(1, args.rounds + 1):
                for kind in kinds:
                    xs = inputs(args.models_dir, args.inputs, time.time() % 1000)  # new: no cache hits
                    run = RUNS[kind](settings, xs, args.chunk, probe)
                    rows.append({"round": rnd, "client": kind, **run})
                    if not args.json:
                        r = rows[-1]
                        print(
                            f"round {rnd} {kind:5}: client {r['client_us']:.1f} µs/input, worker {r['worker_us']:.1f}, "
                            f"redis {r['redis_us']:.1f}; {r['inputs_s']:,.0f} inputs/s end to end "
                            f"({r['e2e_s']:.2f} s)",
                            flush=True,
                        )
        finally:
            stop(w)
    if args.json:
        print(json.dumps({"inputs": args.inputs, "chunk": args.chunk, **means(rows), "runs": rows}, indent=2))


def means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per client, the mean over rounds of each figure, as top-level fields
    (``sync_client_us``, ...): what ``benchmarks/alternate.py`` compares."""
    out: dict[str, float] = {}
    for kind in dict.fromkeys(r["client"] for r in rows):
        mine = [r for r in rows if r["client"] == kind]
        for field in ("client_us", "worker_us", "redis_us", "inputs_s", "e2e_s"):
            out[f"{kind}_{field}"] = sum(r[field] for r in mine) / len(mine)
    return out


if __name__ == "__main__":
    main()
