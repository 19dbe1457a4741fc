"""workers/serving/batcher.py ``Batcher``: when a group runs, what it holds, and what is left at stop.

Pure logic on real threads, no Redis. Timing bounds are generous (a loaded 2-core box):
every upper bound is at least 0.5 s beyond what the batcher itself should take.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator

import pytest

from workers.serving.batcher import Batcher

pytestmark = pytest.mark.timeout(60)

Item = tuple[Hashable, int]  # (batch key, number)


class Recorder:
    """A ``run_batch`` that records each batch, the time it ran, and can hold the thread."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.ran_at: list[float] = []
        self.threads: set[int] = set()
        self._cond = threading.Condition()
        self.hold: threading.Event | None = None  # while set-able, a ("hold", n) item blocks
        self.holding = threading.Event()
        self.fail_first = 0

    def __call__(self, batch: list[Item]) -> None:
        with self._cond:
            self.batches.append(list(batch))
            self.ran_at.append(time.monotonic())
            self.threads.add(threading.get_ident())
            self._cond.notify_all()
        if self.hold is not None and any(key == "hold" for key, _ in batch):
            self.holding.set()
            assert self.hold.wait(30), "the test never released the held batch"
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RuntimeError("run_batch blew up")

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Whether at least ``n`` batches have run within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.batches) >= n, timeout)

    def items(self) -> list[Item]:
        with self._cond:
            return [i for b in self.batches for i in b]


@pytest.fixture()
def make() -> Iterator[Callable[[], tuple[Batcher[Item], Recorder]]]:
    """Started batchers over a ``Recorder``; every one is stopped at the end of the test."""
    made: list[tuple[Batcher[Item], Recorder]] = []

    def factory() -> tuple[Batcher[Item], Recorder]:
        rec = Recorder()
        b: Batcher[Item] = Batcher(rec, name="test-batcher")
        b.start()
        made.append((b, rec))
        return b, rec

    yield factory
    for b, rec in made:
        if rec.hold is not None:
            rec.hold.set()
        b.stop(timeout=5)
        assert not b._thread.is_alive(), "a batcher thread outlived its test"


def hold_thread(b: Batcher[Item], rec: Recorder) -> threading.Event:
    """Keep the batcher thread busy in a batch until the returned event is set, so the
    items put meanwhile all wait in its queue and are sorted in together."""
    rec.hold = threading.Event()
    b.put("hold", ("hold", 0), max_size=1, max_wait_s=0)
    assert rec.holding.wait(5), "the holding batch never started"
    return rec.hold


def test_group_runs_as_soon_as_it_is_full_without_waiting_for_max_wait(make) -> None:
    b, rec = make()
    t0 = time.monotonic()
    for n in range(3):
        b.put("k", ("k", n), max_size=3, max_wait_s=30)
    assert rec.wait_for(1, timeout=5), "a full group waited for its 30 s max_wait"
    assert rec.batches == [[("k", 0), ("k", 1), ("k", 2)]]
    assert rec.ran_at[0] - t0 < 5
    assert b.batches == 1


def test_partial_group_does_not_run_before_it_is_full_or_due(make) -> None:
    b, rec = make()
    b.put("k", ("k", 0), max_size=3, max_wait_s=30)
    b.put("k", ("k", 1), max_size=3, max_wait_s=30)
    assert not rec.wait_for(1, timeout=0.5)
    b.put("k", ("k", 2), max_size=3, max_wait_s=30)
    assert rec.wait_for(1)
    assert rec.batches == [[("k", 0), ("k", 1), ("k", 2)]]


def test_lone_item_runs_after_max_wait_and_not_before(make) -> None:
    b, rec = make()
    max_wait = 0.4
    t0 = time.monotonic()
    b.put("k", ("k", 0), max_size=8, max_wait_s=max_wait)
    assert not rec.wait_for(1, timeout=max_wait / 2), "a lone item ran long before its max_wait"
    assert rec.wait_for(1, timeout=5), "a lone item never ran"
    waited = rec.ran_at[0] - t0
    assert waited >= max_wait
    assert waited < max_wait + 2.0
    assert rec.batches == [[("k", 0)]]


def test_items_with_different_keys_are_never_mixed_in_one_batch(make) -> None:
    b, rec = make()
    release = hold_thread(b, rec)
    # Interleaved keys, all sorted in at once when the thread is released.
    for n in range(6):
        key = ("a", "b", "c")[n % 3]
        b.put(key, (key, n), max_size=2, max_wait_s=0.2)
    release.set()
    assert rec.wait_for(4), rec.batches  # the holding batch, then one per key
    work = [batch for batch in rec.batches if batch[0][0] != "hold"]
    assert len(work) == 3
    for batch in work:
        assert len({key for key, _ in batch}) == 1, f"keys mixed in one batch: {batch}"
    assert sorted(work) == [[("a", 0), ("a", 3)], [("b", 1), ("b", 4)], [("c", 2), ("c", 5)]]


def test_lone_items_of_two_keys_run_as_two_batches(make) -> None:
    b, rec = make()
    b.put("a", ("a", 0), max_size=8, max_wait_s=0.2)
    b.put("b", ("b", 1), max_size=8, max_wait_s=0.2)
    assert rec.wait_for(2)
    assert sorted(rec.batches) == [[("a", 0)], [("b", 1)]]


def test_more_than_max_size_is_split_and_the_remainder_keeps_the_group_deadline(make) -> None:
    b, rec = make()
    release = hold_thread(b, rec)
    max_wait = 2.2
    t0 = time.monotonic()
    b.put("k", ("k", 0), max_size=2, max_wait_s=max_wait)  # the group's deadline: t0 + 2.2
    time.sleep(2.0)
    b.put("k", ("k", 1), max_size=2, max_wait_s=max_wait)
    b.put("k", ("k", 2), max_size=2, max_wait_s=max_wait)  # its own deadline would be t0 + 4.2
    release.set()
    assert rec.wait_for(3, timeout=10)
    assert rec.batches[1:] == [[("k", 0), ("k", 1)], [("k", 2)]]
    remainder_at = rec.ran_at[2] - t0
    assert remainder_at >= max_wait, "the remainder ran before the group's deadline"
    assert remainder_at < 3.5, "the remainder got a fresh deadline instead of keeping the group's"


def test_remainder_that_is_still_full_after_a_split_runs_without_waiting_for_max_wait(make) -> None:
    b, rec = make()
    release = hold_thread(b, rec)
    for n in range(4):
        b.put("k", ("k", n), max_size=2, max_wait_s=30)
    release.set()
    assert rec.wait_for(3, timeout=3), f"only {rec.batches} ran: a full remainder waited for max_wait"
    assert rec.batches[1:] == [[("k", 0), ("k", 1)], [("k", 2), ("k", 3)]]


def test_stop_returns_items_not_yet_run(make) -> None:
    b, rec = make()
    b.put("a", ("a", 0), max_size=10, max_wait_s=30)
    b.put("a", ("a", 1), max_size=10, max_wait_s=30)
    b.put("b", ("b", 2), max_size=10, max_wait_s=30)
    time.sleep(0.2)  # sorted into groups by now (they are returned from the queue otherwise)
    left = b.stop(timeout=5)
    assert sorted(left) == [("a", 0), ("a", 1), ("b", 2)]
    assert rec.batches == []
    assert not b._thread.is_alive()


def test_stop_finishes_the_batch_in_hand_and_returns_items_still_queued(make) -> None:
    b, rec = make()
    release = hold_thread(b, rec)
    b.put("k", ("k", 1), max_size=1, max_wait_s=0)  # would run at once, but the thread is busy
    b.put("k", ("k", 2), max_size=1, max_wait_s=0)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    try:
        left = b.stop(timeout=10)
    finally:
        timer.cancel()
    assert release.is_set(), "stop returned before the batch in hand finished"
    assert rec.batches == [[("hold", 0)]]
    assert sorted(left) == [("k", 1), ("k", 2)]
    assert not b._thread.is_alive()


def test_exception_in_run_batch_is_logged_and_later_items_still_run(
    make, caplog: pytest.LogCaptureFixture
) -> None:
    b, rec = make()
    rec.fail_first = 1
    caplog.set_level(logging.ERROR, logger="workers.serving.batcher")
    b.put("k", ("k", 0), max_size=1, max_wait_s=0)
    assert rec.wait_for(1)
    b.put("k", ("k", 1), max_size=1, max_wait_s=0)
    assert rec.wait_for(2), "the batcher stopped serving after run_batch raised"
    assert rec.batches == [[("k", 0)], [("k", 1)]]
    failures = [r for r in caplog.records if "batch of 1 failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)
    assert b._thread.is_alive()


def test_oldest_deadline_group_runs_first_when_several_are_ready(make) -> None:
    b, rec = make()
    release = hold_thread(b, rec)
    # Inserted youngest first, so neither put order nor dict order gives the expected order.
    b.put("young", ("young", 0), max_size=1, max_wait_s=20)  # ready by size, deadline far away
    b.put("middle", ("middle", 1), max_size=1, max_wait_s=10)
    b.put("old", ("old", 2), max_size=5, max_wait_s=0)  # ready by its deadline, due now
    release.set()
    assert rec.wait_for(4)
    assert [batch[0][0] for batch in rec.batches[1:]] == ["old", "middle", "young"]


def test_all_batches_run_on_the_batcher_thread(make) -> None:
    b, rec = make()
    for n in range(5):
        b.put("k", ("k", n), max_size=1, max_wait_s=0)
    assert rec.wait_for(5)
    assert rec.threads == {b._thread.ident}
    assert threading.get_ident() not in rec.threads
    assert rec.items() == [("k", n) for n in range(5)]
