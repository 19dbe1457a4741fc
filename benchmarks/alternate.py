"""Run one benchmark in two checkouts, alternated, and compare them pair by pair.

    .venv/bin/python benchmarks/alternate.py --before /tmp/base [--after .] [--pairs 4] \\
        -- benchmarks/bulk_overhead.py --models-dir /tmp/iq-models --json

These machines are shared and drift by a quarter from one minute to the next (the
fifth session saw the same two trees swap places between two sets of four pairs), so a
comparison is only worth the pairs it is made of. The benchmark (a script of either
tree, given relative to the tree, that prints one JSON object with ``--json``) runs in
each tree with this Python, in ABBA order: before, after; after, before; ... so a
steady drift favours neither. Every numeric top-level field of the JSON is reported:
both trees' values in run order, their means, the ratio of the means, and in how many
pairs the after tree's value was the lower one (CPU and latency: lower is better;
throughput: higher is).

Each run's stderr goes to ``.run/alternate/``. Ctrl-C stops the run in hand and prints
what the finished pairs showed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TREES = ("before", "after")


def abba(pairs: int) -> list[str]:
    """The order of the runs: before, after; after, before; before, after; ..."""
    out: list[str] = []
    for i in range(pairs):
        out += list(TREES) if i % 2 == 0 else list(reversed(TREES))
    return out


def numbers(doc: Mapping[str, Any]) -> dict[str, float]:
    """The numeric top-level fields of a benchmark's JSON (booleans are not numbers here)."""
    return {k: float(v) for k, v in doc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object a benchmark printed last: from the last line that starts with
    ``{`` (``json.dumps(..., indent=2)`` indents every inner one) to the end."""
    start = 0 if stdout.startswith("{") else stdout.rfind("\n{") + 1
    if start == 0 and not stdout.startswith("{"):
        raise ValueError("the benchmark printed no JSON object (does it take --json?)")
    try:
        doc = json.loads(stdout[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the benchmark's last output is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("the benchmark printed no JSON object (does it take --json?)")
    return doc


def pairs_of(runs: Sequence[tuple[str, dict[str, float]]]) -> list[tuple[dict[str, float], dict[str, float]]]:
    """(before, after) of each complete pair, whichever ran first."""
    out = []
    for i in range(len(runs) // 2):
        pair = dict(runs[2 * i : 2 * i + 2])
        out.append((pair["before"], pair["after"]))
    return out


def compare(runs: Sequence[tuple[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Per field: each tree's values in run order, their means, after/before, and in how
    many complete pairs the after tree's value was lower. ``runs``: (tree, fields) in
    run order, as ``abba`` ordered them."""
    pairs = pairs_of(runs)
    fields = [k for k in runs[0][1] if all(k in r for _, r in runs)] if runs else []
    rows = []
    for k in fields:
        values = {t: [r[k] for tree, r in runs if tree == t] for t in TREES}
        means = {t: statistics.fmean(v) if v else float("nan") for t, v in values.items()}
        rows.append(
            {
                "field": k,
                **values,
                "mean_before": means["before"],
                "mean_after": means["after"],
                "ratio": means["after"] / means["before"] if means["before"] else float("nan"),
                "after_lower": sum(1 for b, a in pairs if a[k] < b[k]),
                "pairs": len(pairs),
            }
        )
    return rows


def run_once(tree: Path, command: list[str], log: Path) -> dict[str, float]:
    with log.open("w") as err:
        done = subprocess.run(
            [sys.executable, *command], cwd=tree, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {tree} exited {done.returncode}; its stderr: {log}")
    return numbers(last_json(done.stdout))


def fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the checkout to compare against")
    ap.add_argument("--after", type=Path, default=ROOT, help="the checkout under test (default: this one)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the script and its arguments")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("expected the benchmark after --, e.g. -- benchmarks/bulk_overhead.py --json")
    if args.pairs < 1:
        ap.error(f"--pairs: expected at least 1, got {args.pairs}")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        if not (tree / command[0]).is_file():
            ap.error(f"--{name} {tree}: expected {command[0]} in it, found none")
    logdir = ROOT / ".run" / "alternate"
    logdir.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, dict[str, float]]] = []
    try:
        for i, tree in enumerate(abba(args.pairs)):
            fields = run_once(trees[tree], command, logdir / f"{i:02d}-{tree}.log")
            runs.append((tree, fields))
            print(f"run {i + 1}/{2 * args.pairs} ({tree}) done", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: comparing the {len(runs) // 2} finished pair(s)", file=sys.stderr)
        runs = runs[: len(runs) // 2 * 2]
    if not runs:
        return 130
    print(
        f"# {' '.join(command)}; before {trees['before']}, after {trees['after']}; {len(runs) // 2} pairs, ABBA"
    )
    print("| field | before, in run order | after, in run order | mean before | mean after | after / before | pairs where after is lower |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in compare(runs):
        print(
            f"| {r['field']} | {', '.join(fmt(v) for v in r['before'])} | {', '.join(fmt(v) for v in r['after'])} "
            f"| {fmt(r['mean_before'])} | {fmt(r['mean_after'])} | {r['ratio']:.3f} | {r['after_lower']} of {r['pairs']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
