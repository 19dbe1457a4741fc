"""producers/limits.py ``QueueDepthGuard``: the producer's queue limit, on a private redis-server.

Queues are filled by pushing straight onto kombu's priority lists (``queue_lists``), as
kombu's Redis transport does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import producers.limits
from ops.local.redis_server import LocalRedis
from producers.limits import QueueDepthGuard
from tasks.connections import redis_client
from tasks.errors import Overloaded
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists
from tasks.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

QUEUE = queue_name("m", "v")


@pytest.fixture()
def rc(own_redis: LocalRedis) -> Iterator[redis.Redis[bytes]]:
    c = redis_client(own_redis.url, Settings(broker_url=own_redis.url))
    yield c
    c.close()


def fill(r: redis.Redis[bytes], n: int, lst: str = QUEUE) -> None:
    if n:
        r.lpush(lst, *[f"msg{i}" for i in range(n)])


class NoRedis:
    """Stands in for the broker client: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the guard used Redis ({name}) although it has no limit")


def test_limit_zero_never_refuses_and_never_reads_redis() -> None:
    guard = QueueDepthGuard(NoRedis(), limit=0)  # type: ignore[arg-type]
    for _ in range(3):
        guard.check(QUEUE, 10**9)


def test_under_the_limit_passes_up_to_exactly_the_limit(rc: redis.Redis[bytes]) -> None:
    fill(rc, 3)
    guard = QueueDepthGuard(rc, limit=5)
    guard.check(QUEUE, 2)  # 3 + 2 == 5: at the limit, not past it
    assert rc.llen(QUEUE) == 3, "the guard changed the queue"


def test_over_the_limit_raises_overloaded_naming_queue_depth_and_limit(rc: redis.Redis[bytes]) -> None:
    fill(rc, 4)
    guard = QueueDepthGuard(rc, limit=5)
    with pytest.raises(Overloaded) as err:
        guard.check(QUEUE, 2)
    assert f"queue {QUEUE} holds 4 jobs; adding 2 would pass the limit of 5" in err.value.message


def test_depth_counts_every_priority_list_of_the_queue(rc: redis.Redis[bytes]) -> None:
    lists = queue_lists(QUEUE)
    assert len(lists) >= 3
    fill(rc, 1, lists[0])
    fill(rc, 2, lists[1])
    fill(rc, 3, lists[-1])
    fill(rc, 50, queue_name("m", "other"))  # another queue's jobs do not count
    QueueDepthGuard(rc, limit=7).check(QUEUE, 1)  # 6 + 1
    with pytest.raises(Overloaded, match=f"queue {QUEUE} holds 6 jobs; adding 2 "):
        QueueDepthGuard(rc, limit=7).check(QUEUE, 2)


def test_between_refreshes_the_guard_counts_its_own_sends_so_a_burst_cannot_pass_the_limit(
    rc: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producers.limits, "REFRESH_S", 60.0)
    guard = QueueDepthGuard(rc, limit=5)
    guard.check(QUEUE, 2)  # read: 0 jobs, then counts 2 sent
    guard.check(QUEUE, 2)  # counts 4; nothing was pushed to Redis
    with pytest.raises(Overloaded, match="holds 4 jobs; adding 2 would pass the limit of 5"):
        guard.check(QUEUE, 2)
    guard.check(QUEUE, 1)  # a refused check counted nothing: 4 + 1 == 5
    with pytest.raises(Overloaded, match="holds 5 jobs; adding 1 "):
        guard.check(QUEUE, 1)
    guard.check(queue_name("m", "w"), 5)  # each queue is counted on its own


def test_between_refreshes_the_guard_does_not_reread_redis(
    rc: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented softness: what other producers add is seen at the next read only."""
    monkeypatch.setattr(producers.limits, "REFRESH_S", 60.0)
    guard = QueueDepthGuard(rc, limit=5)
    guard.check(QUEUE, 1)  # read: 0 jobs
    fill(rc, 100)
    guard.check(QUEUE, 4)  # its own count: 1 + 4
    with pytest.raises(Overloaded, match="holds 5 jobs"):
        guard.check(QUEUE, 1)


def test_after_refresh_s_the_guard_rereads_redis_so_a_drained_queue_is_accepted_again(
    rc: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producers.limits, "REFRESH_S", 2.0)
    fill(rc, 5)
    guard = QueueDepthGuard(rc, limit=5)
    t0 = time.monotonic()
    with pytest.raises(Overloaded, match="holds 5 jobs"):
        guard.check(QUEUE, 1)
    rc.delete(*queue_lists(QUEUE))  # the workers drain the queue
    if time.monotonic() - t0 < 1.8:  # still within REFRESH_S (unless this box stalled): kept depth
        with pytest.raises(Overloaded, match="holds 5 jobs"):
            guard.check(QUEUE, 1)
    time.sleep(2.1)
    guard.check(QUEUE, 5)  # re-read: 0 jobs


def test_after_refresh_s_the_guard_sees_jobs_other_producers_added(
    rc: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producers.limits, "REFRESH_S", 0.3)
    guard = QueueDepthGuard(rc, limit=5)
    guard.check(QUEUE, 1)
    fill(rc, 5)  # another producer filled the queue
    time.sleep(0.5)
    with pytest.raises(Overloaded, match="holds 5 jobs"):
        guard.check(QUEUE, 1)
