"""The sync listener's hand-over of a reply batch (``ResultListener._offer_batch``), as its
thread runs it, without Redis: the listener's thread is never started."""

from __future__ import annotations

import time

import numpy as np

from producers.heard import ROW_SIZE, Row, size_of
from producers.latch import Latch
from producers.listener import ResultListener
from tasks.schema import Timing
from tasks.wire import StatusRecord, encode_columns

TIMING = Timing.build(
    enqueued_at=1.0, received_at=1.0, started_at=1.0, compute_done_at=1.0, finished_at=1.0, batch_size=3
)


def columns(*blocks: list[str]) -> bytes:
    """A version 2 reply batch of one block per list of ids (10 float32 outputs per row)."""
    return encode_columns(
        "digits",
        "fp32",
        "1",
        [
            (ids, {"probs": np.full((len(ids), 10), float(n), np.float32)}, TIMING)
            for n, ids in enumerate(blocks)
        ],
    )


def watching(*ids: str) -> ResultListener:
    """A listener awaiting ``ids`` on its reply channel, as ``watch(ids, sending=ids)`` leaves it."""
    listener = ResultListener(None)  # type: ignore[arg-type]
    now = time.monotonic()
    for jid in ids:
        listener._events[jid] = False
        listener._watched_at[jid] = now
        listener._via_reply.add(jid)
    return listener


def test_a_reply_blocks_rows_are_handed_over_once_each_with_their_times_and_bytes() -> None:
    """Every awaited row is kept as its ``Row``, oldest first in the batch's order; a row
    whose result was evicted earlier keeps its first arrival time; an id heard twice
    (in two blocks) keeps its first row; an id nobody awaits is left out; the bytes held
    are counted as ``size_of`` counts them; the ids leave the reply channel's set."""
    listener = watching("a", "b", "c", "d")
    listener._times["b"] = 5.0  # its result was evicted before: its arrival time kept
    before = time.time()
    listener._offer_batch(columns(["a", "b", "zz"], ["c", "a", "d"]))
    arrived = listener._arrived
    assert list(arrived) == ["a", "b", "c", "d"]
    heard_a, at_a = arrived["a"]
    assert isinstance(heard_a, Row) and heard_a.index == 0 and heard_a.block.ids == ["a", "b", "zz"]
    assert arrived["b"][1] == 5.0 and "b" not in listener._times
    assert at_a >= before and arrived["d"][1] >= before
    assert "zz" not in arrived and "zz" not in listener._events
    assert arrived.nbytes == sum(size_of(h) for h, _ in arrived.values()) == 4 * (ROW_SIZE + 40)
    assert all(listener._events.is_set(j) for j in "abcd") and not listener._via_reply


def test_a_blocked_waiter_is_woken_and_an_id_already_arrived_is_not_replaced() -> None:
    """A waiter blocked on an id (its ``Latch``) wakes when the id's row comes; an id whose
    record arrived before keeps that record (no second arrival)."""
    listener = watching("w", "done")
    latch = Latch()
    assert listener._events.arm("w", latch) is latch
    record = StatusRecord.success("done", {"v": 1}).encode()
    listener._events["done"] = True
    listener._arrived["done"] = (record, 3.0)
    listener._offer_batch(columns(["done", "w"]))
    assert latch.is_set() and listener._events.is_set("w")
    assert isinstance(listener._arrived["w"][0], Row)
    assert listener._arrived["done"] == (record, 3.0)
    assert listener._arrived.nbytes == size_of(record) + ROW_SIZE + 40
