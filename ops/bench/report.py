"""How ``inferq bench`` shows its results: a table for people, JSON for scripts, PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ops.bench.run import MEASURES

COLS = ("mean", "p50", "p90", "p95", "p99", "p99_9", "max")


def load_name(r: dict[str, Any]) -> str:
    """A run's load in a few words: ``400 jobs/s`` (open loop) or ``8 in flight`` (closed)."""
    return f"{r['offered_rate']:g} jobs/s" if r["mode"] == "open" else f"{r['concurrency']} in flight"


def point_name(r: dict[str, Any]) -> str:
    """What tells a run from the others it is shown with: its configuration, else its load."""
    return str(r.get("configuration") or load_name(r))


#: The footnote under a table: where end to end is measured from depends on the loop.
FOOTNOTES = {
    "open": "(end_to_end from each job's intended send time (open loop: a late send counts against it); "
    "queue/batch/compute/processing exclude cache hits)",
    "closed": "(end_to_end from each job's submit (closed loop: each sender waits for its result before "
    "sending the next); queue/batch/compute/processing exclude cache hits)",
}


def table(report: dict[str, Any]) -> str:
    r = report
    load = (
        f"open loop, {r['offered_rate']:g} jobs/s offered"
        if r["mode"] == "open"
        else f"closed loop, {r['concurrency']} in flight"
    )
    ran = f"{r['duration_s']:g} s"
    if r["stopped_early"]:
        ran = (
            f"{r.get('measured_s', r['duration_s']):.1f} s of the {r['duration_s']:g} s asked (stopped early)"
        )
    configuration = f"  [{r['configuration']}]" if r.get("configuration") else ""
    lines = [
        f"{r['model']}:{r['variant'] or 'default'}{configuration}  {load}, {ran}",
        f"sent {r['sent']}  completed {r['completed']}  errors {r['errors']}  late sends {r['late_sends']}  "
        f"throughput {r['throughput']:.1f} jobs/s  cache hits {r['cache_hit_ratio']:.0%}",
        f"{'ms':<12}" + "".join(f"{c.replace('_', '.'):>10}" for c in COLS),
    ]
    for m in MEASURES:
        s = r["latency_ms"][m]
        lines.append(f"{m:<12}" + "".join(f"{s[c]:>10.2f}" for c in COLS))
    lines.append(FOOTNOTES[r["mode"]])
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


def plot(reports: Sequence[dict[str, Any]], out: Path, knee: dict[str, Any] | None = None) -> str:
    """Latency CDFs of every run, one run's breakdown per percentile, throughput vs p99 for a sweep.

    The breakdown is of the knee when there is one, else of the last run, and its
    title says which. Returns what was drawn, in words (also in the PNG's Description).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = knee if knee is not None else reports[-1]
    sweep = len(reports) > 1 and not any(r.get("configuration") for r in reports)
    panels = 3 if sweep else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    ax = axes[0]
    # One run: where its end to end goes. Several: every run's end to end, side by side.
    curves = (
        [(m, reports[0]["samples_ms"][m]) for m in ("end_to_end", "queue", "processing")]
        if len(reports) == 1
        else [(point_name(r), r["samples_ms"]["end_to_end"]) for r in reports]
    )
    drawn = []
    for name, samples in curves:
        v = np.sort(np.asarray(samples))
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=name)
            drawn.append(name)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("fraction of jobs")
    what = "latency CDF" if len(reports) == 1 else "end-to-end latency CDF per run"
    ax.set_title(f"{what} ({chosen['model']})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1]
    pcts = ("p50", "p90", "p99", "p99_9")
    lat = chosen["latency_ms"]
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
    breakdown = point_name(chosen) + (" (the knee)" if chosen is knee else "")
    ax.set_ylabel("ms")
    ax.set_title(
        f"where the time goes, per percentile: {breakdown}"
        if len(reports) > 1
        else "where the time goes, per percentile"
    )
    ax.legend(fontsize=8)

    if sweep:
        ax = axes[2]
        x = [r["throughput"] for r in reports]
        y = [r["latency_ms"]["end_to_end"]["p99"] for r in reports]
        ax.plot(x, y, marker="o")
        for r, xi, yi in zip(reports, x, y, strict=True):
            ax.annotate(load_name(r), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
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
    description = f"{what}: {', '.join(drawn) or 'no samples'}; breakdown: {breakdown}"
    if sweep:
        description += f"; sweep curve: {len(reports)} points"
    fig.tight_layout()
    fig.savefig(out, dpi=90, metadata={"Description": description})
    plt.close(fig)
    return description


def compare_table(reports: Sequence[dict[str, Any]]) -> str:
    """Configurations side by side under the same load, each named in full."""
    w = max([len("configuration"), *(len(r["label"]) for r in reports)])
    head = f"{'configuration':<{w}} {'jobs/s':>8} {'e2e p50':>8} {'e2e p99':>8} {'queue p99':>9} {'proc p50':>9} {'batch':>6} {'hits':>5} {'err':>4}"
    lines = [head, "-" * len(head)]
    for r in reports:
        lat = r["latency_ms"]
        lines.append(
            f"{r['label']:<{w}} {r['throughput']:>8.1f} {lat['end_to_end']['p50']:>8.2f} {lat['end_to_end']['p99']:>8.2f} "
            f"{lat['queue']['p99']:>9.2f} {lat['processing']['p50']:>9.2f} {r.get('mean_batch', float('nan')):>6.1f} "
            f"{r['cache_hit_ratio']:>5.0%} {r['errors']:>4}"
        )
    return "\n".join(lines)
