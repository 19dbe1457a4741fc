"""``inferq bench`` on the command line: parse the load, run each point, print, plot."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

import numpy as np

from ops.bench.managed import WorkerConfig, ensure_queue_is_ours, managed_worker
from ops.bench.report import compare_table, plot, sweep_table, table
from ops.bench.run import BenchClient, BenchConfig, find_knee, run_bench
from producers.client import Client
from tasks.errors import BadInput
from tasks.schema import ModelInfo
from tasks.settings import Settings


def input_pool(args: argparse.Namespace, settings: Settings, info: ModelInfo) -> np.ndarray:
    """The inputs to draw from: a user's .npy, the model's held-out data, or random."""
    pool: np.ndarray
    if args.inputs is not None:
        pool = np.load(args.inputs, allow_pickle=False)
    elif (held := settings.models_dir / info.name / "data" / "heldout_x.npy").is_file():
        pool = np.load(held)
    else:
        if len(info.inputs) != 1 or None in info.inputs[0].shape:
            raise BadInput(f"{info.key}: give --inputs (several or dynamic inputs cannot be made up)")
        spec = info.inputs[0]
        shape = tuple(int(d) for d in spec.shape if d is not None)
        pool = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(spec.dtype)
    if len(info.inputs) == 1 and pool.ndim != len(info.inputs[0].shape) + 1:
        raise BadInput(
            f"--inputs must hold many inputs of shape {list(info.inputs[0].shape)}, got {list(pool.shape)}"
        )
    return pool


#: A sweep stops after this many points even if the system kept up (doubling each time).
MAX_SWEEP_POINTS = 10


def _load(args: argparse.Namespace, v: float, **kw: Any) -> BenchConfig:
    return BenchConfig(
        rate=v if args.rate else None,
        concurrency=int(v) if args.bench_concurrency else None,
        duration_s=args.duration,
        repeat_fraction=args.repeat_fraction,
        senders=args.senders,
        **kw,
    )


def compare_configs(
    args: argparse.Namespace, info: ModelInfo, variants: list[str]
) -> list[tuple[WorkerConfig, bool]]:
    """(worker config, no_cache) for every combination of the compared dimensions."""
    dims = {d.strip() for d in args.compare.split(",") if d.strip()}
    unknown = dims - {"variant", "batching", "cache"}
    if unknown:
        raise BadInput(f"--compare takes variant, batching and/or cache; got {sorted(unknown)}")
    vs = variants if "variant" in dims else [info.variant]
    batching = [None, 1] if "batching" in dims else [None]
    caches = [False, True] if "cache" in dims else [False]
    return [(WorkerConfig(v, max_batch_size=b), nc) for v in vs for b in batching for nc in caches]


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    model, _, variant = args.model.partition(":")
    values = [float(v) for v in (args.rate or args.bench_concurrency).split(",") if v]
    if not values or any(v <= 0 for v in values):
        raise BadInput("--rate/--concurrency must be positive numbers (a comma list sweeps)")
    if args.compare and len(values) > 1:
        raise BadInput("--compare runs one load; give a single --rate or --concurrency")
    stop = threading.Event()
    # Ctrl-C: stop sending, still collect and report what was measured.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    reports: list[dict[str, Any]] = []
    quiet = args.json or not sys.stderr.isatty()

    def one(client: BenchClient, cfg: BenchConfig, pool: np.ndarray, desc: str) -> None:
        with tqdm(total=100, desc=desc, unit="%", disable=quiet, file=sys.stderr) as bar:

            def progress(frac: float) -> None:
                bar.n = int(frac * 100)
                bar.refresh()

            reports.append(run_bench(client, cfg, pool, progress=progress, stop=stop).report())

    if args.target:
        return _bench_http(args, settings, model, variant, values, one, reports, stop)

    with Client(settings) as client:
        info = client.model_info(model, variant or None)
        pool = input_pool(args, settings, info)
        if args.compare:
            ensure_queue_is_ours(client, info.name)
            known = sorted(
                {k.split(":", 1)[1] for k in client.models(refresh=True) if k.startswith(info.name + ":")}
            )
            local = sorted(p.parent.name for p in (settings.models_dir / info.name).glob("*/meta.json"))
            variants = [v for v in (args.variants.split(",") if args.variants else local or known) if v]
            for wcfg, no_cache in compare_configs(args, info, variants):
                label = wcfg.label() + (", cache off" if no_cache else "")
                with managed_worker(client, info.name, wcfg):
                    cfg = _load(
                        args, values[0], model=info.name, variant=wcfg.variant, no_cache=no_cache, label=label
                    )
                    one(client, cfg, pool, label)
                if stop.is_set():
                    break
        else:
            queue = list(values)
            while queue:
                v = queue.pop(0)
                cfg = _load(args, v, model=info.name, variant=info.variant, label=f"{info.key} {v:g}")
                one(client, cfg, pool, f"{cfg.mode} {v:g}")
                if stop.is_set():
                    break
                # --sweep: keep doubling the load until the knee is behind us.
                if (
                    args.sweep
                    and not queue
                    and len(reports) < MAX_SWEEP_POINTS
                    and find_knee(reports) is reports[-1]
                ):
                    queue.append(v * 2)
    return _report(args, reports, stop)


def _report(args: argparse.Namespace, reports: list[dict[str, Any]], stop: threading.Event) -> int:
    knee = find_knee(reports) if len(reports) > 1 and not args.compare else None
    if args.plot:
        plot(reports, args.plot, knee)
    if args.json:
        doc: dict[str, Any] = {"runs": [{k: v for k, v in r.items() if k != "samples_ms"} for r in reports]}
        if knee is not None:
            doc["knee"] = {k: v for k, v in knee.items() if k != "samples_ms"}
        print(json.dumps(doc, indent=2))
    else:
        for r in reports:
            print(table(r), end="\n\n")
        if args.compare:
            print(compare_table(reports))
        elif len(reports) > 1:
            print(sweep_table(reports, knee))
        if args.plot:
            print(f"plot: {args.plot}")
    return 130 if stop.is_set() else 0


def _bench_http(
    args: argparse.Namespace,
    settings: Settings,
    model: str,
    variant: str,
    values: list[float],
    one: Any,
    reports: list[dict[str, Any]],
    stop: threading.Event,
) -> int:
    """``--target``: the same closed-loop load through the gateway's HTTP API."""
    from ops.bench.http_target import HttpTarget

    if args.compare or args.rate:
        raise BadInput(
            "--target drives the gateway with a closed loop: give --concurrency (not --rate or --compare)"
        )
    key = args.api_key if args.api_key is not None else next(iter(settings.api_key_list), "")
    with HttpTarget(args.target, path=args.http_path, api_key=key) as target:
        info = target.model_info(model, variant or None)
        target.set_input_name(info)
        pool = input_pool(args, settings, info)
        for v in values:
            label = f"{info.key} {v:g} via {args.target} ({args.http_path})"
            cfg = _load(args, v, model=info.name, variant=info.variant, label=label)
            one(target, cfg, pool, f"http {args.http_path} {v:g}")
            if stop.is_set():
                break
    return _report(args, reports, stop)


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench.tune import Grid, apply, table, tune

    def nums(text: str, kind: type) -> list[Any]:
        return [kind(v) for v in text.split(",") if v]

    with Client(settings) as client:
        info = client.model_info(args.model)
        local = sorted(p.parent.name for p in (settings.models_dir / info.name).glob("*/meta.json"))
        variants = nums(args.variants, str) if args.variants else local or [info.variant]
        grid = Grid(
            variants=variants,
            batch_sizes=nums(args.batch_sizes, int),
            waits_ms=nums(args.waits, float),
            threads=nums(args.tune_threads, int),
            concurrencies=nums(args.tune_concurrency, int),
            duration_s=args.duration,
        )
        pool = input_pool(args, settings, info)
        result = tune(client, info.name, grid, args.p99_ms, pool)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    if args.apply and result["recommended"] is not None:
        path = apply(settings.models_dir, info.name, result["recommended"])
        print(f"applied to {path}", file=sys.stderr)
    return 0 if result["recommended"] is not None else 1
