"""``inferq bench`` on the command line: parse the load, run each point, print, plot."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

import numpy as np

from producers.bench import BenchConfig, find_knee, run_bench
from producers.bench_report import plot, sweep_table, table
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


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    model, _, variant = args.model.partition(":")
    values = [float(v) for v in (args.rate or args.bench_concurrency).split(",") if v]
    if not values or any(v <= 0 for v in values):
        raise BadInput("--rate/--concurrency must be positive numbers (a comma list sweeps)")
    stop = threading.Event()
    # Ctrl-C: stop sending, still collect and report what was measured.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    reports: list[dict[str, Any]] = []
    with Client(settings) as client:
        info = client.model_info(model, variant or None)
        pool = input_pool(args, settings, info)
        for v in values:
            cfg = BenchConfig(
                model=info.name,
                variant=info.variant,
                rate=v if args.rate else None,
                concurrency=int(v) if args.bench_concurrency else None,
                duration_s=args.duration,
                repeat_fraction=args.repeat_fraction,
                senders=args.senders,
            )
            quiet = args.json or not sys.stderr.isatty()
            with tqdm(total=100, desc=f"{cfg.mode} {v:g}", unit="%", disable=quiet, file=sys.stderr) as bar:

                def progress(frac: float, bar: Any = bar) -> None:
                    bar.n = int(frac * 100)
                    bar.refresh()

                run = run_bench(client, cfg, pool, progress=progress, stop=stop)
            reports.append(run.report())
            if stop.is_set():
                break
    knee = find_knee(reports) if len(reports) > 1 else None
    if args.plot:
        plot(reports, args.plot, knee)
    if args.json:
        out = [{k: v for k, v in r.items() if k != "samples_ms"} for r in reports]
        doc: dict[str, Any] = {"runs": out}
        if knee is not None:
            doc["knee"] = {k: v for k, v in knee.items() if k != "samples_ms"}
        print(json.dumps(doc, indent=2))
    else:
        for r in reports:
            print(table(r), end="\n\n")
        if len(reports) > 1:
            print(sweep_table(reports, knee))
        if args.plot:
            print(f"plot: {args.plot}")
    return 130 if stop.is_set() else 0
