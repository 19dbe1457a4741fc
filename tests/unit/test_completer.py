"""workers/serving/batcher.py ``Completer``: one thread, submission order, errors contained,
``stop`` drains, and a full queue pushes back on ``submit``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from workers.serving.batcher import Completer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def make() -> Iterator[Callable[..., Completer]]:
    """Started completers; every one is stopped (and must end) at the end of the test."""
    made: list[Completer] = []

    def factory(depth: int = 4) -> Completer:
        c = Completer(depth=depth)
        c.start()
        made.append(c)
        return c

    yield factory
    for c in made:
        c.stop(timeout=5)
        assert not c.is_alive(), "a completer thread outlived its test"


def test_runs_callables_in_submission_order_on_its_own_single_thread(make) -> None:
    c = make(depth=4)
    ran: list[tuple[int, int]] = []
    for n in range(50):
        c.submit(lambda n=n: ran.append((n, threading.get_ident())))
    c.stop(timeout=10)
    assert [n for n, _ in ran] == list(range(50))
    assert {ident for _, ident in ran} == {c.ident}
    assert c.ident != threading.get_ident()


def test_a_raising_callable_is_logged_and_later_ones_still_run(
    make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="workers.serving.batcher")
    c = make()
    ran: list[str] = []

    def boom() -> None:
        ran.append("boom")
        raise ValueError("store failed")

    c.submit(lambda: ran.append("before"))
    c.submit(boom)
    c.submit(lambda: ran.append("after"))
    c.stop(timeout=10)
    assert ran == ["before", "boom", "after"]
    logged = [r for r in caplog.records if "completing a batch failed" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], ValueError)


def test_stop_finishes_everything_submitted_before_it_returns(make) -> None:
    c = make(depth=8)
    done: list[int] = []

    def slow(n: int) -> None:
        time.sleep(0.05)
        done.append(n)

    for n in range(6):
        c.submit(lambda n=n: slow(n))
    c.stop(timeout=10)
    assert done == list(range(6))
    assert not c.is_alive()


def test_stop_on_a_completer_never_started_returns_at_once() -> None:
    c = Completer()
    t0 = time.monotonic()
    c.stop(timeout=10)
    assert time.monotonic() - t0 < 1.0
    assert not c.is_alive()


def test_submit_blocks_while_the_queue_is_full_until_the_thread_catches_up(make) -> None:
    c = make(depth=2)
    gate = threading.Event()
    busy = threading.Event()
    ran: list[int] = []

    def first() -> None:
        busy.set()
        assert gate.wait(30)
        ran.append(0)

    c.submit(first)
    assert busy.wait(5)  # taken off the queue: the thread is stuck in it
    c.submit(lambda: ran.append(1))
    c.submit(lambda: ran.append(2))  # the queue (depth 2) is now full

    returned = threading.Event()

    def submit_one_more() -> None:
        c.submit(lambda: ran.append(3))
        returned.set()

    pusher = threading.Thread(target=submit_one_more, daemon=True)
    pusher.start()
    try:
        assert not returned.wait(0.5), "submit returned although the queue was full"
        assert ran == []
    finally:
        gate.set()
    assert returned.wait(5), "submit stayed blocked after the thread caught up"
    pusher.join(5)
    c.stop(timeout=10)
    assert ran == [0, 1, 2, 3]
