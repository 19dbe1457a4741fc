"""A comparison as a picture: latency against agreement and accuracy, file size as marker area.

The trade at a glance: a variant up and to the left is faster and as good; the
marker's area shows what it costs on disk. Latency is on a log scale when variants
differ by more than 10x (int16x8 on reference kernels, a SavedModel). Needs matplotlib
(the ``bench`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workers.models.optimize.compare import Comparison, VariantFigures


def _panels(c: Comparison) -> list[tuple[str, Any]]:
    panels: list[tuple[str, Any]] = []
    if any(v.top1 is not None for v in c.variants):
        panels.append((f"top-1 agreement with {c.reference} (%)", lambda v: v.top1))
    elif any(v.agreement for v in c.variants):
        panels.append((f"mean |output - {c.reference}| (lower is better)", _mean_abs))
    if any(v.accuracy is not None for v in c.variants):
        panels.append(("accuracy (%)", lambda v: v.accuracy))
    return panels or [("(no reference, no labels)", lambda v: None)]


def _mean_abs(v: VariantFigures) -> float | None:
    return v.agreement[0].mean_abs if v.agreement else None


def plot(c: Comparison, out: Path) -> Path:
    """Write the PNG to ``out`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(c)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels) + 3, 5), squeeze=False)
    biggest = max(v.file_bytes for v in c.variants) or 1
    latencies = [v.batch1["p50_ms"] for v in c.variants]
    log_x = max(latencies) > 10 * min(latencies)
    cmap = plt.get_cmap("tab20")
    for ax, (ylabel, value) in zip(axes[0], panels, strict=True):
        for i, v in enumerate(c.variants):
            y = value(v)
            if y is None:
                continue
            y = y if "mean |" in ylabel else 100 * y
            label = f"{v.variant}: {v.file_bytes / 1024:.0f} KiB, {v.best['inputs_per_s']:.0f}/s at b={v.best['batch']}"
            ax.scatter(
                [v.batch1["p50_ms"]],
                [y],
                s=40 + 900 * v.file_bytes / biggest,
                alpha=0.6,
                color=cmap(i % 20),
                edgecolors="black",
                linewidths=0.5,
                label=label,
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("latency at batch 1, p50 (ms)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.margins(0.15)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="center right", fontsize=8, title="marker area = file size")
    for handle in legend.legend_handles:
        if handle is not None and hasattr(handle, "set_sizes"):
            handle.set_sizes([40])
    fig.suptitle(f"{c.model} variants on {c.machine}, {c.threads} thread(s), {c.samples} inputs", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.72 if len(panels) == 1 else 0.8, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
