"""Concurrent single submissions grouped into one run (producers/coalesce.py), without Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from producers.coalesce import Coalescer, queue_sends
from producers.sender import Outgoing


def far() -> float:
    return time.monotonic() + 30


def test_a_lone_submission_runs_at_once_on_its_own_thread():
    seen: list[tuple[list[int], str]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        seen.append((items, threading.current_thread().name))
        return [i * 2 for i in items]

    assert Coalescer(run).submit(21, far()) == 42
    assert seen == [([21], threading.current_thread().name)]


def test_submissions_that_arrive_during_a_run_go_together_in_the_next_one_each_with_its_answer():
    first_runs = threading.Event()
    release = threading.Event()
    groups: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        groups.append(items)
        if len(groups) == 1:
            first_runs.set()
            release.wait(5)
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(run)
    answers: dict[int, int] = {}

    def go(i: int) -> None:
        answers[i] = c.submit(i, far())

    leader = threading.Thread(target=go, args=(0,))
    leader.start()
    assert first_runs.wait(5)
    others = [threading.Thread(target=go, args=(i,)) for i in range(1, 9)]
    for t in others:
        t.start()
    time.sleep(0.2)  # all eight queued behind the first run
    release.set()
    for t in [leader, *others]:
        t.join(5)
    assert answers == {i: i * 10 for i in range(9)}
    assert groups[0] == [0] and sorted(groups[1]) == list(range(1, 9)) and len(groups) == 2


def test_an_item_error_stays_with_its_item_and_a_run_error_reaches_every_item():
    def run(items: list[int]) -> list[int | BaseException]:
        if 99 in items:
            raise redis.ConnectionError("gone")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    c: Coalescer[int, int] = Coalescer(run)
    assert c.submit(1, far()) == 1
    with pytest.raises(ValueError, match="bad -1"):
        c.submit(-1, far())
    with pytest.raises(redis.ConnectionError):
        c.submit(99, far())
    assert c.submit(2, far()) == 2, "a failed run leaves the coalescer usable"


def test_a_waiter_past_its_deadline_gives_up_and_the_lead_passes_to_the_next():
    release = threading.Event()
    groups: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        groups.append(items)
        if len(groups) == 1:
            release.wait(5)
        return list(items)

    c: Coalescer[int, int] = Coalescer(run)
    leader = threading.Thread(target=c.submit, args=(0, far()))
    leader.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        c.submit(1, time.monotonic() + 0.2)
    assert time.monotonic() - t0 < 1
    out: list[int] = []
    waiter = threading.Thread(target=lambda: out.append(c.submit(2, far())))
    waiter.start()
    time.sleep(0.1)
    release.set()
    leader.join(5)
    waiter.join(5)
    assert out == [2]
    assert groups == [[0], [2]], "the item that gave up was never run"


def test_plain_messages_for_one_list_go_in_one_lpush_in_order():
    class Pipe:
        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple[object, ...]]] = []

        def lpush(self, *args: object) -> None:
            self.calls.append(("lpush", args))

        def set(self, *args: object, **kw: object) -> None:
            self.calls.append(("set", args))

    pipe = Pipe()
    queue_sends(
        pipe,
        [
            Outgoing("a", "q1", "m1"),
            Outgoing("b", "q2", "m2"),
            Outgoing("c", "q1", "m3"),
            Outgoing("d", "q1", "m4", blobs={"ref": b"x"}, blob_ttl_s=5),
        ],
    )
    assert pipe.calls == [
        ("set", ("ref", b"x")),
        ("lpush", ("q1", "m4")),
        ("lpush", ("q1", "m1", "m3")),
        ("lpush", ("q2", "m2")),
    ]


def test_a_child_process_after_a_fork_does_not_wait_for_its_parents_group():
    c: Coalescer[int, int] = Coalescer(lambda items: list(items))
    # As a fork mid-group leaves it in the child: a leader that does not exist there, and
    # the lock held by a thread the child does not have.
    c._leading = True
    c._lock.acquire()
    c._pid = -1
    t0 = time.monotonic()
    assert c.submit(7, time.monotonic() + 5) == 7
    assert time.monotonic() - t0 < 1
