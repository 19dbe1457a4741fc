"""How ``inferq bench`` shows its results: a table for people, JSON for scripts, PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.run import MEASURES

COLS = ("mean", "p50", "p90", "p95", "p99", "p99_9", "max")


def table(report: dict[str, Any]) -> str:
    r = report
    load = (
        f"open loop, {r['offered_rate']:g} jobs/s offered"
        if r["mode"] == "open"
        else f"closed loop, {r['concurrency']} in flight"
    )
    lines = [
        f"{r['model']}:{r['variant'] or 'default'}  {load}, {r['duration_s']:g} s"
        + ("  (stopped early)" if r["stopped_early"] else ""),
        f"sent {r['sent']}  completed {r['completed']}  errors {r['errors']}  late sends {r['late_sends']}  "
        f"throughput {r['throughput']:.1f} jobs/s  cache hits {r['cache_hit_ratio']:.0%}",
        f"{'ms':<12}" + "".join(f"{c.replace('_', '.'):>10}" for c in COLS),
    ]
    for m in MEASURES:
        s = r["latency_ms"][m]
        lines.append(f"{m:<12}" + "".join(f"{s[c]:>10.2f}" for c in COLS))
    lines.append(
        "(end_to_end from each job's intended send time in open loop; queue/batch/compute/processing exclude cache hits)"
    )
    return "\n".join(lines)


def sweep_table(points: Sequence[dict[str, Any]], knee: dict[str, Any] | None) -> str:
    key = "offered_rate" if points[0]["mode"] == "open" else "concurrency"
    lines = [f"{key:>14} {'throughput':>11} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}"]
    for p in points:
        e = p["latency_ms"]["end_to_end"]
        mark = "  <- knee" if p is knee else ""
        lines.append(
            f"{p[key]:>14g} {p['throughput']:>11.1f} {e['p50']:>9.2f} {e['p99']:>9.2f} {p['errors']:>7}{mark}"
        )
    return "\n".join(lines)


def plot(reports: Sequence[dict[str, Any]], out: Path, knee: dict[str, Any] | None = None) -> None:
    """Latency CDF and per-percentile breakdown of the last run; throughput vs p99 for a sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = reports[-1]
    panels = 3 if len(reports) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    ax = axes[0]
    for m in ("end_to_end", "queue", "processing"):
        v = np.sort(np.asarray(last["samples_ms"][m]))
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title(f"latency CDF ({last['model']})")
    ax.grid(True, alpha=0.3)
    ax.legend()

    ax = axes[1]
    pcts = ("p50", "p90", "p99", "p99_9")
    lat = last["latency_ms"]
    parts = {
        "queue": [lat["queue"][p] for p in pcts],
        "batch wait": [lat["batch_wait"][p] for p in pcts],
        "compute": [lat["compute"][p] for p in pcts],
    }
    rest = [max(0.0, lat["end_to_end"][p] - sum(v[i] for v in parts.values())) for i, p in enumerate(pcts)]
    parts["other: late sends, transport, client"] = rest
    bottom = np.zeros(len(pcts))
    for name, vals in parts.items():
        arr = np.nan_to_num(np.asarray(vals, dtype=float))
        ax.bar([p.replace("_", ".") for p in pcts], arr, bottom=bottom, label=name)
        bottom += arr
    ax.set_ylabel("ms")
    ax.set_title("where the time goes, per percentile")
    ax.legend(fontsize=8)

    if panels == 3:
        ax = axes[2]
        x = [r["throughput"] for r in reports]
        y = [r["latency_ms"]["end_to_end"]["p99"] for r in reports]
        ax.plot(x, y, marker="o")
        if knee is not None:
            ax.plot(
                [knee["throughput"]],
                [knee["latency_ms"]["end_to_end"]["p99"]],
                "r*",
                markersize=14,
                label="knee",
            )
            ax.legend()
        ax.set_xlabel("throughput, jobs/s")
        ax.set_ylabel("p99 end to end, ms")
        ax.set_yscale("log")
        ax.set_title("sweep: throughput vs p99")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def compare_table(reports: Sequence[dict[str, Any]]) -> str:
    """Configurations side by side under the same load."""
    head = f"{'configuration':<34} {'jobs/s':>8} {'e2e p50':>8} {'e2e p99':>8} {'queue p99':>9} {'proc p50':>9} {'batch':>6} {'hits':>5} {'err':>4}"
    lines = [head, "-" * len(head)]
    for r in reports:
        lat = r["latency_ms"]
        lines.append(
            f"{r['label'][:34]:<34} {r['throughput']:>8.1f} {lat['end_to_end']['p50']:>8.2f} {lat['end_to_end']['p99']:>8.2f} "
            f"{lat['queue']['p99']:>9.2f} {lat['processing']['p50']:>9.2f} {r.get('mean_batch', float('nan')):>6.1f} "
            f"{r['cache_hit_ratio']:>5.0%} {r['errors']:>4}"
        )
    return "\n".join(lines)
