"""A comparison for people: one table, every figure per variant on one row."""

from __future__ import annotations

from workers.models.optimize.compare import Comparison, VariantFigures

HEADERS = (
    "variant",
    "runtime",
    "KiB",
    "% ref",
    "load ms",
    "1st ms",
    "b1 mean",
    "b1 p50",
    "b1 p99",
    "best b",
    "bb mean",
    "bb p50",
    "bb p99",
    "inputs/s",
    "RSS MiB",
    "XNNPACK",
    "top-1 agr",
    "max|d|",
    "mean|d|",
    "accuracy",
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _row(v: VariantFigures, reference_bytes: int | None) -> list[str]:
    first = v.agreement[0] if v.agreement else None
    delegated = v.xnnpack_heavy_ops
    return [
        v.variant,
        v.runtime,
        f"{v.file_bytes / 1024:.1f}",
        "-" if not reference_bytes else f"{100 * v.file_bytes / reference_bytes:.0f}%",
        _ms(v.load_ms),
        _ms(v.first_run_ms),
        _ms(v.batch1["mean_ms"]),
        _ms(v.batch1["p50_ms"]),
        _ms(v.batch1["p99_ms"]),
        str(v.best["batch"]),
        _ms(v.best["mean_ms"]),
        _ms(v.best["p50_ms"]),
        _ms(v.best["p99_ms"]),
        f"{v.best['inputs_per_s']:.0f}",
        f"{v.peak_rss_bytes / 2**20:.0f}",
        "-" if delegated is None else f"{delegated[0]}/{delegated[1]}",
        _pct(v.top1),
        "-" if first is None else f"{first.max_abs:.3g}",
        "-" if first is None else f"{first.mean_abs:.3g}",
        _pct(v.accuracy),
    ]


def table(c: Comparison) -> str:
    """The comparison as a fixed-width table under a heading that says what it ran on."""
    ref = c.figures(c.reference) if c.reference is not None else None
    rows = [list(HEADERS), *(_row(v, ref.file_bytes if ref is not None else None) for v in c.variants)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = [
        f"{c.model} on {c.machine}; {c.threads} thread(s); {c.samples} inputs from {c.data}",
        f"agreement with {c.reference or 'nothing (no reference variant)'}; ms per call at batch 1 (b1) and "
        "at the best batch (bb: most inputs/s); XNNPACK: heavy ops it runs / all",
    ]
    for r in rows:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)
