"""What ``bench`` and ``tune`` accept, checked before anything connects, starts or runs.

A value the load cannot use (a zero duration, a repeat fraction of 1.5, a negative
p99 budget) or an option that would be silently ignored is refused at once, as a
one-line ``BadInput`` that says what was expected and what came, not after minutes
of load or as a traceback from deep inside.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, TypeVar

from tasks.errors import BadInput, ConfigError

#: What ``bench --compare`` can put side by side.
COMPARE_DIMENSIONS = ("variant", "batching", "cache")

N = TypeVar("N", int, float)


def numbers(option: str, text: str, kind: Callable[[str], N], *, low: N, low_ok: bool = False) -> list[N]:
    """A comma list of numbers, each above ``low`` (or equal to it with ``low_ok``)."""
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    bound = f">= {low:g}" if low_ok else f"> {low:g}"
    ok = bool(values) and all(math.isfinite(v) and (v >= low if low_ok else v > low) for v in values)
    if not ok:
        what = "whole numbers" if kind is int else "numbers"
        raise BadInput(f"{option} takes a comma list of {what} {bound}, got {text!r}")
    return values


def positive(option: str, value: float, unit: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise BadInput(f"{option} must be more than 0 {unit}, got {value:g}")
    return value


def fraction(option: str, value: float) -> float:
    if not (0.0 <= value <= 1.0):
        raise BadInput(f"{option} is a share of jobs, from 0 to 1, got {value:g}")
    return value


def compare_dimensions(args: argparse.Namespace) -> set[str]:
    """The dimensions ``--compare`` names (empty without it); ``--variants`` only goes with ``variant``."""
    dims = {d.strip() for d in (args.compare or "").split(",") if d.strip()}
    unknown = dims - set(COMPARE_DIMENSIONS)
    if args.compare is not None and (unknown or not dims):
        raise BadInput(
            f"--compare takes {', '.join(COMPARE_DIMENSIONS)} (a comma list), got {args.compare!r}"
        )
    if args.variants is not None and "variant" not in dims:
        raise BadInput(
            f"--variants {args.variants} is only used by --compare variant (to run each variant under "
            "the same load); for one variant give --model MODEL:VARIANT"
        )
    return dims


def require_matplotlib() -> None:
    """``--plot`` draws with matplotlib: find out before the run, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'inferq[bench]' "
            "(or run without --plot)"
        ) from None


def check_bench(args: argparse.Namespace) -> tuple[list[float], set[str]]:
    """Every ``bench`` argument that needs more than argparse checks; the loads and compared dimensions."""
    option = "--rate" if args.rate else "--concurrency"
    values = numbers(option, args.rate or args.bench_concurrency, float, low=0.0)
    if args.bench_concurrency and any(v != int(v) for v in values):
        raise BadInput(f"--concurrency takes whole numbers of jobs in flight, got {args.bench_concurrency!r}")
    positive("--duration", args.duration, "seconds")
    if args.repeat_fraction is not None:
        fraction("--repeat-fraction", args.repeat_fraction)
    if args.senders < 1:
        raise BadInput(f"--senders must be 1 or more, got {args.senders}")
    dims = compare_dimensions(args)
    if dims and len(values) > 1:
        raise BadInput("--compare runs one load; give a single --rate or --concurrency")
    if args.plot is not None:
        require_matplotlib()
    return values, dims


def check_tune(args: argparse.Namespace) -> dict[str, list[Any]]:
    """Every ``tune`` argument, before it starts a worker; the grid's lists of values."""
    if ":" in args.model:
        name, _, variant = args.model.partition(":")
        raise BadInput(
            f"tune --model takes a model name (it tries each variant), got {args.model!r}; "
            f"to tune one variant: --model {name} --variants {variant}"
        )
    positive("--p99-ms", args.p99_ms, "ms")
    positive("--duration", args.duration, "seconds")
    variants = [v.strip() for v in (args.variants or "").split(",") if v.strip()]
    if args.variants is not None and not variants:
        raise BadInput(f"--variants takes a comma list of variants, got {args.variants!r}")
    return {
        "variants": variants,
        "batch_sizes": numbers("--batch-sizes", args.batch_sizes, int, low=1, low_ok=True),
        "waits_ms": numbers("--waits", args.waits, float, low=0.0, low_ok=True),
        "threads": numbers("--tune-threads", args.tune_threads, int, low=1, low_ok=True),
        "concurrencies": numbers("--concurrency", args.tune_concurrency, int, low=1, low_ok=True),
    }
