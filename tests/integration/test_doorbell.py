"""The doorbell wakes an idle fetcher on a push to its queues, and takes nothing."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from ops.local.redis_server import LocalRedis
from tasks.kombu_layout import queue_lists
from workers.broker.doorbell import Doorbell, broadcast_prefixes
from workers.broker.fetcher import Fetcher

pytestmark = pytest.mark.integration

QUEUE = "inferq.bell.fp32"


def started(bell: Doorbell, timeout: float = 10) -> Doorbell:
    bell.start()
    deadline = time.monotonic() + timeout
    while not bell.working and time.monotonic() < deadline:
        time.sleep(0.01)
    return bell


def test_overlapping_queue_names_share_one_broadcast_prefix() -> None:
    assert broadcast_prefixes(["inferq.m.v2", "inferq.m.v", "inferq.n.v", "inferq.m.v"]) == [
        "inferq.m.v",
        "inferq.n.v",
    ]


def test_a_push_to_any_priority_list_rings_and_the_message_stays_queued(own_redis: LocalRedis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    bell = started(Doorbell(r, [*queue_lists(QUEUE), *queue_lists("inferq.bell.int8")]))
    try:
        assert bell.working
        for lst in queue_lists(QUEUE):
            bell.clear()
            assert not bell.wait(0.2), "rang with nothing pushed"
            r.lpush(lst, b"job")
            assert bell.wait(10), f"a push to {lst!r} did not ring"
            assert r.llen(lst) == 1, "the doorbell must not take the message"
        bell.clear()
        r.lpush(QUEUE + "x", b"job")  # under the same broadcast prefix, but not ours
        r.lpush("inferq.other.queue", b"job")
        r.set("celery-task-meta-x", b"{}")
        assert not bell.wait(0.3), "rang for a key outside its queues"
    finally:
        bell.stop()


def test_a_redis_that_refuses_tracking_leaves_the_fetcher_polling(
    own_redis: LocalRedis, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    admin.execute_command("ACL", "SETUSER", "nobell", "on", ">pw", "~*", "&*", "+@all", "-client")
    url = own_redis.url.replace("redis://", "redis://nobell:pw@")
    r = redis.Redis.from_url(url)
    got: list[object] = []
    with caplog.at_level(logging.WARNING, logger="workers.broker.doorbell"):
        fetcher = Fetcher(r, [QUEUE], got.extend, capacity=4)
        fetcher.start()
        try:
            time.sleep(0.5)
            assert not fetcher.doorbell.working
            r.lpush(QUEUE, b'{"properties": {"delivery_tag": "t1"}}')
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(got) == 1, "a polling fetcher must still take the job"
        finally:
            fetcher.stop()
    assert "refused change tracking" in caplog.text
