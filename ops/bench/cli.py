"""``inferq bench`` and ``inferq tune`` on the command line: check, run each point, print, plot."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import numpy as np

from ops.bench.checks import check_bench, check_tune
from ops.bench.compare import configurations, repeat_fraction
from ops.bench.inputs import input_pool
from ops.bench.interrupt import stop_on_ctrl_c
from ops.bench.managed import ensure_queue_is_ours, managed_worker
from ops.bench.report import compare_table, plot, sweep_table, table
from ops.bench.run import BenchClient, BenchConfig, find_knee, run_bench
from producers.client import Client
from producers.served import served_by, unserved_message
from tasks import constants as C
from tasks.errors import BadInput, ConfigError
from tasks.settings import Settings

#: A sweep stops after this many points even if the system kept up (doubling each time).
MAX_SWEEP_POINTS = 10


def _load(args: argparse.Namespace, v: float, repeat: float, **kw: Any) -> BenchConfig:
    return BenchConfig(
        rate=v if args.rate else None,
        concurrency=int(v) if args.bench_concurrency else None,
        duration_s=args.duration,
        repeat_fraction=repeat,
        senders=args.senders,
        **kw,
    )


def require_a_worker(client: Client, key: str) -> None:
    """Refuse to load a variant no live worker serves: every job would wait until its
    timeout and the report would measure nothing but that wait."""
    served = served_by(
        client.bound.run(
            "reading worker heartbeats",
            lambda: client.backend.hgetall(C.WORKERS_KEY),
            client.bound.deadline(None),
        )
    )
    if key not in served:
        raise ConfigError(
            f"{unserved_message(key, served)}; start one (inferq worker --models {key}) "
            "or pass --no-worker-check to measure the wait"
        )


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    values, dims = check_bench(args)
    repeat = repeat_fraction(dims, args.repeat_fraction)
    model, _, variant = args.model.partition(":")
    # Ctrl-C: stop sending, still collect and report what was measured.
    stop = stop_on_ctrl_c()
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
        pool = input_pool(args.inputs, settings, info)
        if not dims and not args.no_worker_check:
            require_a_worker(client, info.key)
        if dims:
            ensure_queue_is_ours(client, info.name)
            known = sorted(
                {k.split(":", 1)[1] for k in client.models(refresh=True) if k.startswith(info.name + ":")}
            )
            local = sorted(p.parent.name for p in (settings.models_dir / info.name).glob("*/meta.json"))
            variants = [v for v in (args.variants.split(",") if args.variants else local or known) if v]
            for v in variants:  # an unknown variant is named now, not by a worker that cannot start
                client.model_info(info.name, v)
            try:
                for conf in configurations(dims, info.variant, variants):
                    label = conf.label()
                    with managed_worker(client, info.name, conf.worker, stop=stop):
                        cfg = _load(
                            args, values[0], repeat, model=info.name, variant=conf.worker.variant,
                            no_cache=conf.no_cache, label=label, configuration=label,
                        )  # fmt: skip
                        one(client, cfg, pool, label)
                    if stop.is_set():
                        break
            except KeyboardInterrupt:  # stopped while a worker started: report what was measured
                stop.set()
        else:
            queue = list(values)
            while queue:
                v = queue.pop(0)
                cfg = _load(args, v, repeat, model=info.name, variant=info.variant, label=f"{info.key} {v:g}")
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
    drawn = plot(reports, args.plot, knee) if args.plot and reports else ""
    if args.json:
        doc: dict[str, Any] = {"runs": [{k: v for k, v in r.items() if k != "samples_ms"} for r in reports]}
        if knee is not None:
            doc["knee"] = {k: v for k, v in knee.items() if k != "samples_ms"}
        print(json.dumps(doc, indent=2))
    else:
        for r in reports:
            print(table(r), end="\n\n")
        if args.compare and reports:
            share = reports[0]["repeat_fraction"]
            given = (
                "--repeat-fraction"
                if args.repeat_fraction is not None
                else "the default when comparing the cache"
            )
            print(
                f"each configuration under the same load; {share:.0%} of jobs repeat an earlier input ({given})"
            )
            print(compare_table(reports))
        elif len(reports) > 1:
            print(sweep_table(reports, knee))
        if drawn:
            print(f"plot: {args.plot} ({drawn})")
    if stop.is_set():
        print("stopped early (Ctrl-C): the figures cover what ran until then", file=sys.stderr)
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
        pool = input_pool(args.inputs, settings, info)
        for v in values:
            label = f"{info.key} {v:g} via {args.target} ({args.http_path})"
            cfg = _load(
                args, v, args.repeat_fraction or 0.0, model=info.name, variant=info.variant, label=label
            )
            one(target, cfg, pool, f"http {args.http_path} {v:g}")
            if stop.is_set():
                break
    return _report(args, reports, stop)


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench.tune import Grid, apply, auto_lines, auto_plans, table, tune

    values = check_tune(args)
    # Ctrl-C: finish (or cut short) the point being measured, stop tune's worker,
    # report what was measured as partial; no further configurations.
    stop = stop_on_ctrl_c()
    with Client(settings) as client:
        info = client.model_info(args.model)
        local = sorted(p.parent.name for p in (settings.models_dir / info.name).glob("*/meta.json"))
        variants = values.pop("variants") or local or [info.variant]
        for v in variants:  # an unknown variant is named now, not by a worker that cannot start
            client.model_info(info.name, v)
        grid = Grid(variants=variants, duration_s=args.duration, **values)
        pool = input_pool(args.inputs, settings, info)
        result = tune(client, info.name, grid, args.p99_ms, pool, stop=stop)
    if not result["partial"]:
        result["auto"] = auto_plans(settings, info.name, variants)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join([table(result), *auto_lines(result)]))
    if result["partial"]:
        if args.apply:
            print("not applied: the tune was stopped before it measured every configuration", file=sys.stderr)
        return 130
    if args.apply and result["recommended"] is not None:
        path = apply(settings.models_dir, info.name, result["recommended"])
        print(f"applied to {path}", file=sys.stderr)
    return 0 if result["recommended"] is not None else 1
