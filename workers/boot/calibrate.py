"""Measuring for ``--concurrency auto``: each served model's cost, timed in a child process.

Each selected model is loaded and timed per input at batch 1, 2, 4, ... (until one call
passes ``BATCH_COMPUTE_BUDGET_MS``) on one thread and, for a heavy model, at batch 1 on
more threads; the result is a ``ModelCost`` per model that ``auto_plan.choose_plan``
turns into a plan.

``python -m workers.boot.calibrate --models a,b:int8`` prints the measured costs as
JSON: ``inferq worker`` and ``inferq tune`` calibrate in such a child
(``calibrate_in_child``), so that no model, thread pool or TensorFlow stays in the
supervising process. Apart from ``auto_plan.py`` because this half loads models and
its figures depend on the machine and the moment; the choice stays pure, and is tested
without either.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.settings import Settings
from workers.boot.auto_plan import BATCH_COMPUTE_BUDGET_MS, HEAVY_SHARE, ModelCost, best_batch, model_share
from workers.boot.cores import available_cores

#: Batch sizes timed (powers of two up to the default ``max_batch_size`` x 2).
CALIBRATION_BATCHES = (1, 2, 4, 8, 16, 32, 64)
#: Thread counts tried for a heavy model (those up to the cores).
CALIBRATION_THREADS = (2, 4, 8)
#: Each timing repeats its call for at least this long (and 3 calls) and keeps the fastest.
CALIBRATION_MIN_S = 0.1
CALIBRATION_MAX_CALLS = 200


def calibrate(settings: Settings, specs: list[str] | None, cores: float) -> list[ModelCost]:
    """Load each selected model here and time it (see the module's docstring)."""
    import numpy as np

    from workers.models.registry import Registry
    from workers.models.runtimes import load_runtime

    out: list[ModelCost] = []
    for entry in Registry(settings.models_dir).select(specs):
        info = entry.info
        if any(None in s.shape for s in info.inputs):
            out.append(ModelCost(entry.key, {}, skipped="a dynamic input shape: no input to time it on"))
            continue

        def batch_of(n: int) -> dict[str, Any]:
            return {s.name: np.zeros((n, *s.shape), s.dtype) for s in info.inputs}  # noqa: B023

        runtime = load_runtime(entry, threads=1)
        per_input: dict[int, float] = {}
        for b in CALIBRATION_BATCHES:
            ms = time_call(runtime.predict, batch_of(b))
            per_input[b] = ms / b
            if ms > BATCH_COMPUTE_BUDGET_MS:
                break
        del runtime
        cost = ModelCost(entry.key, per_input, tuned_batch=_tuned_batch(entry.path.parent / "meta.json"))
        heavy = model_share(cost, best_batch(cost)) >= HEAVY_SHARE and cores >= 2
        if heavy and info.runtime != "litert":
            # TensorFlow sizes its thread pool once per process: a second load with more
            # threads would silently run on the first's, and measure no speed-up.
            cost = ModelCost(
                entry.key,
                per_input,
                tuned_batch=cost.tuned_batch,
                threads_skipped=f"{info.runtime} sets its threads once per process",
            )
        elif heavy:
            by_threads = {1: per_input[1]}
            for t in CALIBRATION_THREADS:
                if t > cores:
                    break
                threaded = load_runtime(entry, threads=t)
                by_threads[t] = time_call(threaded.predict, batch_of(1))
                del threaded
            cost = ModelCost(entry.key, per_input, by_threads, cost.tuned_batch)
        out.append(cost)
    return out


def time_call(fn: Callable[[Any], Any], arg: Any) -> float:
    """The fastest ms of ``fn(arg)`` over its repeats, after one untimed call (which
    allocates). The fastest, as ``timeit`` advises: what the machine can do, not what
    its neighbours of the moment left it (a worker runs for longer than they do)."""
    fn(arg)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (
        time.perf_counter() - start < CALIBRATION_MIN_S and len(times) < CALIBRATION_MAX_CALLS
    ):
        t0 = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def _tuned_batch(meta_path: Path) -> int | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return int(meta["max_batch_size"]) if meta.get("tuned") and "max_batch_size" in meta else None


def calibrate_in_child(
    settings: Settings, specs: list[str] | None, cores: float, timeout: float = 300
) -> list[ModelCost]:
    """``calibrate`` in a child process (``python -m workers.boot.calibrate``)."""
    cmd = [sys.executable, "-m", "workers.boot.calibrate", "--cores", str(cores)]
    if specs:
        cmd += ["--models", ",".join(specs)]
    proc = subprocess.run(
        cmd,
        env={**os.environ, **settings.env()},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConfigError(f"--concurrency auto: calibrating the models failed: {tail}")
    return [ModelCost.from_dict(d) for d in json.loads(proc.stdout)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.boot.calibrate", description=__doc__)
    ap.add_argument("--models", help="comma list of MODEL or MODEL:VARIANT (default: all)")
    ap.add_argument("--cores", type=float, help="cores to plan for (default: this machine's)")
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    specs = [s for s in (args.models or "").split(",") if s] or None
    cores = args.cores or available_cores()
    try:
        costs = calibrate(settings, specs, cores)
    except ConfigError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([c.to_dict() for c in costs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
