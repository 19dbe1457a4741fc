"""``producers/latch.py``: the one-shot wake-up the sync client's threads block on."""

from __future__ import annotations

import threading
import time

from producers.latch import Latch


def test_wait_on_an_unset_latch_times_out_false() -> None:
    latch = Latch()
    t0 = time.monotonic()
    assert latch.wait(0.05) is False
    assert time.monotonic() - t0 >= 0.04
    assert latch.wait(0) is False and latch.wait(-1) is False, "no wait at all for a bound already past"
    assert not latch.is_set()


def test_set_wakes_every_blocked_waiter() -> None:
    latch = Latch()
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(latch.wait(10))) for _ in range(8)]
    for t in waiters:
        t.start()
    time.sleep(0.05)  # let them block
    assert not woke
    latch.set()
    for t in waiters:
        t.join(5)
    assert woke == [True] * 8


def test_a_set_latch_answers_at_once_and_a_second_set_is_harmless() -> None:
    latch = Latch()
    latch.set()
    latch.set()
    assert latch.is_set()
    assert latch.wait(0) and latch.wait(None) and latch.wait(5)


def test_a_waiter_arriving_while_another_passes_the_latch_on_still_wakes() -> None:
    # Waiters hand the lock on one after another: a late waiter must not find it taken
    # and block until its timeout.
    latch = Latch()
    threading.Timer(0.02, latch.set).start()
    results = []
    threads = [threading.Thread(target=lambda: results.append(latch.wait(5))) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(6)
    assert results == [True] * 32
    t0 = time.monotonic()
    assert latch.wait(5) and time.monotonic() - t0 < 1
