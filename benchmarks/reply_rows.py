"""What a bulk client's Python spends per result row, from reply batch to output array.

    .venv/bin/python benchmarks/reply_rows.py [--rows 30000] [--block 64] [--rounds 5] [--json]

A bulk client (``infer_many``) hears its results as version 2 reply batches: blocks of
rows, one per model call (``tasks/wire/replies.py``). Each row then passes the sync
listener (``producers/listener.py``: watched, handed over into the ``ArrivalStore``,
taken by ``collect``) and ``Gather`` (``producers/bulk.py``: copied into the output and
timing arrays). This runs those steps on ``--rows`` rows in blocks of ``--block`` in
this process, without Redis or a worker (the listener's thread is never started), and
prints the best of ``--rounds`` per step, in µs per row:

- ``decode``: ``ReplyBatch.decode`` of every batch (msgpack, each block checked);
- ``watch``: the ids registered as awaited on the reply channel (what ``watch`` stores);
- ``offer``: ``_offer_batch`` of every batch, as the listener thread runs it (decode
  included);
- ``take``: ``collect``'s ``_take_arrived``, 256 ids at a time;
- ``gather``: ``Gather.add_plan`` of 256-row chunks, ``settle`` of every row, ``result``.

Each step is timed on its own, so a change to one shows there; the sum is what the
client's Python pays per bulk result besides sending and waiting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.system_bench import cpu_name  # noqa: E402
from producers.bulk import Gather  # noqa: E402
from producers.listener import ResultListener  # noqa: E402
from tasks.schema import Timing  # noqa: E402
from tasks.wire import ReplyBatch, encode_columns  # noqa: E402

#: Ids per ``add_plan`` and per ``_take_arrived``: a chunk of ``infer_many`` (256) and
#: ``collect``'s ``TAKE_RUN``.
CHUNK = 256


def batches(rows: int, block: int) -> tuple[list[str], list[bytes]]:
    """``rows`` fresh ids and their reply batches, one block of ``block`` rows each, with
    the digits model's output (10 float32)."""
    ids = [uuid.uuid4().hex for _ in range(rows)]
    t = time.time()
    timing = Timing.build(
        enqueued_at=t, received_at=t, started_at=t, compute_done_at=t, finished_at=t, batch_size=block
    )
    rng = np.random.default_rng(0)
    out = []
    for start in range(0, rows, block):
        part = ids[start : start + block]
        probs = rng.random((len(part), 10), dtype=np.float32)
        out.append(encode_columns("digits", "fp32", "1", [(part, {"probs": probs}, timing)]))
    return ids, out


def one_round(ids: list[str], blobs: list[bytes]) -> dict[str, float]:
    """Seconds per step over all rows."""
    took: dict[str, float] = {}
    t0 = time.perf_counter()
    for blob in blobs:
        ReplyBatch.decode(blob)
    took["decode"] = time.perf_counter() - t0

    listener = ResultListener(None)  # type: ignore[arg-type]  # its thread never starts
    t0 = time.perf_counter()
    now = time.monotonic()
    with listener._lock:
        for jid in ids:  # what ``watch(ids, sending=ids)`` stores per id
            listener._events[jid] = False
            listener._watched_at[jid] = now
            listener._via_reply.add(jid)
    took["watch"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for blob in blobs:
        listener._offer_batch(blob)
    took["offer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    taken: dict[str, Any] = {}
    for start in range(0, len(ids), CHUNK):
        with listener._lock:
            taken.update(listener._take_arrived(ids[start : start + CHUNK], run=True))
    took["take"] = time.perf_counter() - t0
    assert len(taken) == len(ids), f"{len(taken)} of {len(ids)} rows taken"

    t0 = time.perf_counter()
    gather = Gather("digits", "fp32", len(ids))
    for start in range(0, len(ids), CHUNK):
        specs = [
            SimpleNamespace(id=j, record=None, cached=False, arrived=None) for j in ids[start : start + CHUNK]
        ]
        gather.add_plan(SimpleNamespace(t0=time.time(), specs=specs))  # type: ignore[arg-type]
    for jid, arrival in taken.items():
        gather.settle(jid, arrival)
    got = gather.result()
    took["gather"] = time.perf_counter() - t0
    assert got.ok and got.outputs["probs"].shape == (len(ids), 10)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--block", type=int, default=64, help="rows per reply block (a batch)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON object (for benchmarks/alternate.py)")
    args = ap.parse_args()
    ids, blobs = batches(args.rows, args.block)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for step, s in one_round(ids, blobs).items():
            best[step] = min(best.get(step, float("inf")), s)
    per_row = {f"{step}_us_per_row": s / args.rows * 1e6 for step, s in best.items()}
    per_row["listener_and_gather_us_per_row"] = sum(
        per_row[f"{s}_us_per_row"] for s in ("watch", "offer", "take", "gather")
    )
    if args.json:
        print(json.dumps({"machine": cpu_name(), "rows": args.rows, "block": args.block, **per_row}))
        return 0
    print(f"machine: {cpu_name()}; {args.rows:,} rows in blocks of {args.block}, best of {args.rounds}")
    print("| step | µs per row |")
    print("|---|---|")
    for name, value in per_row.items():
        print(f"| {name.removesuffix('_us_per_row')} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
