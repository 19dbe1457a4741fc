"""Leases on unacknowledged messages, against a real redis-server and real kombu messages."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from ops.local.redis_server import LocalRedis
from tasks.app import create_app
from tasks.constants import PREDICT_TASK
from tasks.kombu_layout import PRIORITY_SEP, UNACKED, UNACKED_INDEX, is_model_queue, list_for
from tasks.settings import Settings
from workers.broker.envelope import parse_message
from workers.broker.fetcher import Delivery, Fetcher
from workers.broker.leases import Leases

pytestmark = pytest.mark.integration

QUEUE = "inferq.digits.fp32"


@pytest.fixture()
def r(own_redis: LocalRedis) -> redis.Redis:
    return redis.Redis.from_url(own_redis.url)


def send(own_redis: LocalRedis, job_id: str, priority: int) -> None:
    app = create_app(Settings(broker_url=own_redis.url))
    request = {"model": "digits", "variant": "fp32", "inputs": {}}
    app.send_task(PREDICT_TASK, args=[request], task_id=job_id, queue=QUEUE, priority=priority)


def take(r: redis.Redis, n: int) -> list[Delivery]:
    """What a worker's fetcher takes (and records as unacknowledged), without running a worker."""
    got: list[Delivery] = []
    f = Fetcher(r, [QUEUE], got.extend, capacity=n)
    return f._take(n)


@pytest.mark.parametrize(
    ("priority", "suffix"),
    [(0, ""), (2, ""), (3, "3"), (5, "3"), (6, "6"), (9, "9"), (42, "9"), (-1, ""), (None, ""), ("x", "")],
)
def test_a_message_goes_back_to_the_list_of_its_priority_step(priority: object, suffix: str) -> None:
    assert list_for(QUEUE, priority) == (QUEUE + PRIORITY_SEP + suffix if suffix else QUEUE)


@pytest.mark.parametrize(
    ("name", "ours"),
    [(QUEUE, True), ("inferq.worker.host", False), ("inferq.default", False), ("celery", False)],
)
def test_only_model_queues_are_swept_here(name: str, ours: bool) -> None:
    assert is_model_queue(name) is ours


def test_a_dead_workers_message_is_taken_back_to_its_priority_list_and_runs_again(
    own_redis: LocalRedis, r: redis.Redis
) -> None:
    send(own_redis, "job-low", priority=6)
    [d] = take(r, 1)
    assert r.zcard(UNACKED_INDEX) == 1 and r.llen(QUEUE + PRIORITY_SEP + "6") == 0
    # The fetcher's worker dies: nobody renews the lease.
    time.sleep(0.6)
    assert Leases(r, visibility_timeout_s=0.5).sweep() == 1
    assert r.zcard(UNACKED_INDEX) == 0 and r.hlen(UNACKED) == 0
    assert r.llen(QUEUE + PRIORITY_SEP + "6") == 1
    [again] = take(r, 1)
    assert json.loads(again.raw)["headers"]["redelivered"] is True
    assert parse_message(again.raw)[0][0] == "job-low"
    # A new delivery tag: the first worker, if it was only cut off and comes back to ack
    # its old delivery, cannot erase the record of the new one.
    assert again.tag != d.tag
    Fetcher(r, [QUEUE], lambda _: None, capacity=1).ack([d])
    assert r.zscore(UNACKED_INDEX, again.tag) is not None and r.hexists(UNACKED, again.tag)


def test_a_held_lease_is_renewed_and_never_taken_back(own_redis: LocalRedis, r: redis.Redis) -> None:
    send(own_redis, "job-held", priority=3)
    [d] = take(r, 1)
    mine = Leases(r, visibility_timeout_s=0.4)
    mine.hold([d.tag])
    mine.start()
    try:
        other = Leases(r, visibility_timeout_s=0.4)  # another worker's sweep
        for _ in range(8):
            time.sleep(0.15)
            assert other.sweep() == 0
        assert r.zcard(UNACKED_INDEX) == 1
    finally:
        mine.stop()
        mine.join()
    time.sleep(0.5)  # the lease lapses once nobody renews it
    assert Leases(r, visibility_timeout_s=0.4).sweep() == 1


def test_racing_sweepers_put_a_message_back_exactly_once(own_redis: LocalRedis, r: redis.Redis) -> None:
    for i in range(50):
        send(own_redis, f"job-{i}", priority=3)
    assert len(take(r, 50)) == 50
    time.sleep(0.3)
    sweepers = [Leases(redis.Redis.from_url(own_redis.url), visibility_timeout_s=0.2) for _ in range(4)]
    threads = [threading.Thread(target=s.sweep) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s.taken_back for s in sweepers) == 50
    assert r.llen(QUEUE + PRIORITY_SEP + "3") == 50 and r.zcard(UNACKED_INDEX) == 0


def test_entries_of_other_queues_are_left_for_kombu(r: redis.Redis) -> None:
    entry = json.dumps([{"headers": {}, "properties": {}, "body": ""}, "", "celery"])
    r.hset(UNACKED, "foreign", entry)
    r.zadd(UNACKED_INDEX, {"foreign": time.time() - 100})
    assert Leases(r, visibility_timeout_s=1).sweep() == 0
    assert r.hexists(UNACKED, "foreign") and r.llen("celery") == 0
