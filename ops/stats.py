"""Latency statistics from exact samples: mean and percentiles, never averages of averages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99, 99.9)


def summarize(samples: Iterable[float], percentiles: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"n", "mean", "p50", ..., "max"}`` of the samples (``nan`` when there are none)."""
    arr = np.asarray(list(samples), dtype=np.float64)
    if arr.size == 0:
        out = {"n": 0.0, "mean": float("nan"), "max": float("nan")}
        out.update({_pname(p): float("nan") for p in percentiles})
        return out
    out = {"n": float(arr.size), "mean": float(arr.mean()), "max": float(arr.max())}
    values = np.percentile(arr, percentiles, method="linear")
    out.update({_pname(p): float(v) for p, v in zip(percentiles, values, strict=True)})
    return out


def _pname(p: float) -> str:
    return f"p{p:g}".replace(".", "_") if p != int(p) else f"p{int(p)}"


def latency_table(
    rows: dict[str, dict[str, float]], cols: Sequence[str] = ("mean", "p50", "p95", "p99")
) -> str:
    """A fixed-width table: one row per measure (queue, processing, ...), times in ms."""
    width = max([len(r) for r in rows] + [10])
    head = f"{'ms':<{width}}  " + "  ".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, stats in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{stats.get(c, float('nan')):>9.2f}" for c in cols))
    return "\n".join(lines)
