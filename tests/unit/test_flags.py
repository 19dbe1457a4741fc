"""The sync listener's watched ids (``producers/flags.py``): a bool until a waiter blocks."""

from __future__ import annotations

import threading

from producers.flags import Flags
from producers.latch import Latch


def test_an_id_that_arrives_before_anyone_waits_needs_no_latch() -> None:
    flags = Flags()
    flags["a"] = False
    assert not flags.is_set("a") and not flags.awaited("a")
    assert flags.arrive("a")
    assert flags.is_set("a") and flags["a"] is True
    assert flags.arm("a", Latch()) is None, "arrived: nothing to block on"
    assert not flags.arrive("a"), "a second arrival does nothing"


def test_an_id_not_watched_neither_arrives_nor_blocks() -> None:
    flags = Flags()
    assert not flags.arrive("x") and "x" not in flags
    assert flags.arm("x", Latch()) is None and not flags.is_set("x")


def test_arrival_wakes_every_waiter_that_armed_the_id() -> None:
    flags = Flags()
    flags["a"] = False
    first = Latch()
    assert flags.arm("a", first) is first and flags.awaited("a")
    assert flags.arm("a", Latch()) is first, "a second waiter blocks on the same latch"
    threading.Timer(0.05, flags.arrive, args=("a",)).start()
    assert first.wait(5) and flags.is_set("a") and not flags.awaited("a")


def test_dropping_a_watched_id_wakes_its_waiter_to_find_nothing() -> None:
    flags = Flags()
    flags["a"] = False
    latch = Latch()
    flags.arm("a", latch)
    flags.drop("a")
    assert latch.is_set() and "a" not in flags
    flags.drop("missing")  # no error


def test_waking_all_marks_every_id_arrived_and_wakes_the_blocked() -> None:
    flags = Flags()
    flags["a"], flags["b"] = False, False
    latch = Latch()
    flags.arm("b", latch)
    flags.wake_all()
    assert latch.is_set() and flags.is_set("a") and flags.is_set("b")
