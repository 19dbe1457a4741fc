"""Micro-benchmarks of the client's per-job steps that issue 18's profile named (no Redis).

Each step is timed in this tree and, with ``--before REV``, as the same modules were at
``REV`` (read with ``git show``, loaded beside this tree's), alternated in one process.
"``+ busy thread``" runs the step while another thread spins in Python (the client's
submit loop or result listener): a step that lets go of the GIL then waits to get it
back, which is what the profile of the client showed.

    .venv/bin/python benchmarks/client_hot_path.py --before HEAD~1
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load(path: str, rev: str | None) -> ModuleType:
    """``path``'s module as in this tree (``rev`` None) or at ``rev``."""
    name = path.removesuffix(".py").replace("/", ".")
    if rev is None:
        return importlib.import_module(name)
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = ModuleType(f"{name}__{rev}")
    module.__file__ = str(ROOT / path)
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def _per_call_us(fn: Callable[[], Any], number: int, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


class Busy:
    """A thread spinning in Python for as long as the ``with`` lasts."""

    def __enter__(self) -> Busy:
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        time.sleep(0.01)
        return self

    def _spin(self) -> None:
        n = 0
        while not self._stop:
            n += 1

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()


def fit_timeout(bounded: ModuleType) -> dict[str, Callable[[], Any]]:
    """``DeadlineConnection._fit_timeout`` before a read: on the listener's thread (no
    call), and inside a call with the client's bound (5 s) as its reads see it."""
    conn = bounded.DeadlineConnection(host="localhost", socket_timeout=5.0)
    a, b = socket.socketpair()
    conn._sock = a
    conn._keep = b  # the pair stays open while conn lives

    def in_call() -> None:
        bounded._call.deadline = time.monotonic() + 5.0
        try:
            conn._fit_timeout(sending=False)
        finally:
            bounded._call.deadline = None

    return {
        "_fit_timeout, listener read": lambda: conn._fit_timeout(sending=False),
        "_fit_timeout, read in a call": in_call,
    }


def job_id(keys: ModuleType) -> dict[str, Callable[[], Any]]:
    """A single job's id: digits' input, 28x28x1 float32 (3,136 bytes)."""
    x = {"image": np.random.default_rng(0).random((28, 28, 1), dtype=np.float32)}
    return {"job_id, 3 KiB input": lambda: keys.job_id("digits", "fp32", "4c8bc2b5a6e0", x)}


def timing(schema: ModuleType) -> dict[str, Callable[[], Any]]:
    """``Timing.from_dict`` of a worker's timing (its nine keys)."""
    d = schema.Timing.build(
        enqueued_at=1.0, received_at=2.0, started_at=3.0, compute_done_at=3.5, finished_at=4.0, batch_size=8
    ).to_dict()
    return {"Timing.from_dict": lambda: schema.Timing.from_dict(d)}


def steps(rev: str | None) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    out.update(fit_timeout(_load("producers/bounded.py", rev)))
    out.update(job_id(_load("tasks/keys.py", rev)))
    out.update(timing(_load("tasks/schema.py", rev)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="a git revision to compare with (e.g. HEAD~1)")
    ap.add_argument("--number", type=int, default=20000, help="calls per timing")
    args = ap.parse_args()
    trees: dict[str, dict[str, Callable[[], Any]]] = {"after": steps(None)}
    if args.before:
        trees = {"before": steps(args.before), **trees}
    rows: dict[tuple[str, str], list[float]] = {}
    for busy in (False, True):
        for _ in range(2):  # alternated: a noisy machine moves both alike
            for tree, fns in trees.items():
                for name, fn in fns.items():
                    if busy:
                        with Busy():
                            us = _per_call_us(fn, max(1, args.number // 10), repeat=3)
                    else:
                        us = _per_call_us(fn, args.number)
                    rows.setdefault((name + (" + busy thread" if busy else ""), tree), []).append(us)
    names = list(dict.fromkeys(name for name, _ in rows))
    print(f"| step | {' | '.join(trees)} |  (µs per call, best of the alternated runs)")
    print(f"|---|{'---|' * len(trees)}")
    for name in names:
        cells = [f"{min(rows[(name, tree)]):.2f}" for tree in trees]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
