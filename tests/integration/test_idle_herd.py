"""Idle workers take turns listening: one push costs O(1) fetches however many are idle.

Twenty fetchers on one queue, each with its own id and alive key (what a worker's
lease heartbeat keeps up), run in this process against a private Redis. Jobs are
pushed one at a time, each after the previous one was taken, the way a trickle of web
requests arrives. Each must be taken exactly once, and the fetch script must run about
twice per job (the leader's fetch, and its successor's first look), not twice per
idle worker as when every doorbell ring woke every worker.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from ops.local.redis_server import LocalRedis
from tasks.liveness import HOLDERS, alive_key, leader_key, wake_key
from workers.broker.fetcher import Delivery, Fetcher

pytestmark = pytest.mark.integration

QUEUE = "inferq.herd.fp32"
_TAGS = itertools.count()


def message() -> bytes:
    tag = f"t{next(_TAGS)}"
    return json.dumps(
        {
            "body": "",
            "properties": {"delivery_tag": tag, "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE}},
        }
    ).encode()


class Worker:
    """A fetcher with an alive key, acking what it takes at once."""

    def __init__(self, url: str, wid: str, taken: list[tuple[str, Delivery]]) -> None:
        self.r = redis.Redis.from_url(url)
        self.wid = wid
        self.r.set(alive_key(wid), 1, px=60_000)
        self.taken = taken
        self.fetcher = Fetcher(
            self.r, [QUEUE], self.on_deliveries, capacity=4, worker_id=wid, follow_block_s=1.0
        )

    def on_deliveries(self, got: list[Delivery]) -> None:
        self.taken.extend((self.wid, d) for d in got)
        self.fetcher.ack(got)

    def die(self) -> None:
        """As a SIGKILL would leave things: no hand-over, and the alive key lapses."""
        self.fetcher._resign = lambda: None  # type: ignore[method-assign]
        self.fetcher.stop()
        self.r.delete(alive_key(self.wid))


@pytest.fixture
def workers(own_redis: LocalRedis) -> Iterator[tuple[list[Worker], list[tuple[str, Delivery]]]]:
    taken: list[tuple[str, Delivery]] = []
    ws = [Worker(own_redis.url, f"w{i}", taken) for i in range(20)]
    for w in ws:
        w.fetcher.start()
    deadline = time.monotonic() + 20
    while not all(w.fetcher.doorbell.working for w in ws) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # they settle: one leader, nineteen asleep
    yield ws, taken
    for w in ws:
        w.fetcher.stop()


def wait_for(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.002)
    return False


def fetches(ws: list[Worker]) -> int:
    return sum(w.fetcher.fetches for w in ws)


def test_twenty_idle_workers_take_a_trickle_of_jobs_with_about_two_fetches_each(
    own_redis: LocalRedis, workers: tuple[list[Worker], list[tuple[str, Delivery]]]
) -> None:
    ws, taken = workers
    r = redis.Redis.from_url(own_redis.url)
    before = fetches(ws)
    n = 40
    for i in range(n):
        r.lpush(QUEUE, message())
        assert wait_for(lambda i=i: len(taken) > i), f"job {i} was not taken"
        time.sleep(0.02)  # the next request comes a little later
    time.sleep(0.3)
    per_job = (fetches(ws) - before) / n
    print(f"fetches per job: {per_job:.2f}")
    assert len(taken) == n and len({d.tag for _, d in taken}) == n, "each job taken exactly once"
    # Every idle worker racing for each job cost ~2 fetches per worker: 40 here.
    assert per_job <= 2.5, f"{per_job:.2f} fetches per job with 20 idle workers"
    assert len({wid for wid, _ in taken}) > 1, "listening is handed on, not kept by one worker"
    assert r.hlen(HOLDERS) == 0, "acked messages leave no holder record"


def test_a_leader_that_dies_is_replaced_and_jobs_still_flow(
    own_redis: LocalRedis, workers: tuple[list[Worker], list[tuple[str, Delivery]]]
) -> None:
    ws, taken = workers
    r = redis.Redis.from_url(own_redis.url)
    leader = (r.get(leader_key([QUEUE])) or b"").decode()
    assert leader, "one idle worker listens"
    next(w for w in ws if w.wid == leader).die()
    r.lpush(QUEUE, message())
    # The sleepers look at the leader's alive key every follow_block_s (1 s here).
    assert wait_for(lambda: len(taken) == 1, timeout=10), "a follower took over listening"
    assert taken[0][0] != leader


def test_a_leader_that_stops_hands_listening_on_at_once(
    own_redis: LocalRedis, workers: tuple[list[Worker], list[tuple[str, Delivery]]]
) -> None:
    ws, taken = workers
    r = redis.Redis.from_url(own_redis.url)
    leader = (r.get(leader_key([QUEUE])) or b"").decode()
    stopping = next(w for w in ws if w.wid == leader)
    stopping.fetcher.stop()
    stopping.fetcher.join(timeout=10)
    assert not stopping.fetcher.is_alive()
    assert wait_for(lambda: (r.get(leader_key([QUEUE])) or b"").decode() not in ("", leader), timeout=2)
    r.lpush(QUEUE, message())
    assert wait_for(lambda: len(taken) == 1, timeout=2)


def test_a_sleeping_follower_stops_at_once(own_redis: LocalRedis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    r.set(alive_key("someone"), 1, px=60_000)
    r.set(leader_key([QUEUE]), "someone")
    f = Fetcher(r, [QUEUE], lambda _: None, capacity=1, worker_id="sleeper", follow_block_s=30)
    f.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    f.stop()
    f.join(timeout=10)
    assert not f.is_alive() and time.monotonic() - t0 < 2.0
    assert r.llen(wake_key([QUEUE])) == 0, "a follower that stops wakes no one"


def test_a_busy_worker_drains_a_deep_queue_without_waiting_on_its_doorbell(own_redis: LocalRedis) -> None:
    r = redis.Redis.from_url(own_redis.url)
    for _ in range(200):
        r.lpush(QUEUE, message())
    got: list[Delivery] = []
    done = threading.Event()
    fetches_when_drained: list[int] = []

    def deliver(d: list[Delivery]) -> None:
        got.extend(d)
        f.ack(d)
        if len(got) >= 200:
            # Counted here, in the fetcher's thread: read after ``done``, the count also
            # held the idle looks a loaded machine let it make before the test read it.
            fetches_when_drained.append(f.fetches)
            done.set()

    r.set(alive_key("solo"), 1, px=60_000)
    f = Fetcher(r, [QUEUE], deliver, capacity=8, worker_id="solo")
    f.start()
    try:
        assert done.wait(10)
        # 25 full fetches and a look or two besides to drain 200 messages (26 here, with
        # the machine loaded or not).
        assert fetches_when_drained[0] <= 27, fetches_when_drained
    finally:
        f.stop()


def test_a_worker_whose_own_lease_lapsed_takes_nothing_until_it_is_renewed(own_redis: LocalRedis) -> None:
    """Another worker may be taking its messages back at that moment: what it took now
    would run twice."""
    r = redis.Redis.from_url(own_redis.url)
    got: list[Delivery] = []
    f = Fetcher(r, [QUEUE], got.extend, capacity=4, worker_id="stalled")
    f.start()
    try:
        r.lpush(QUEUE, message())
        time.sleep(1.0)
        assert got == [] and r.llen(QUEUE) == 1, "taken without a live lease"
        r.set(alive_key("stalled"), 1, px=60_000)
        assert wait_for(lambda: len(got) == 1, timeout=5), "taken once the lease is back"
        assert r.hget(HOLDERS, got[0].tag) == b"stalled"
    finally:
        f.stop()


def test_a_lone_worker_keeps_listening_while_it_computes_and_an_idle_one_takes_over(
    own_redis: LocalRedis,
) -> None:
    """With nobody asleep there is no one to hand over to: a lone worker goes on taking
    jobs for its next batch while one is in hand (it is marked busy). A worker that then
    goes idle takes listening from the busy one instead of sleeping behind it."""
    r = redis.Redis.from_url(own_redis.url)
    held: list[Delivery] = []
    r.set(alive_key("lone"), 1, px=60_000)
    lone = Fetcher(r, [QUEUE], held.extend, capacity=8, worker_id="lone")  # never acks
    lone.start()
    try:
        assert wait_for(lambda: r.get(leader_key([QUEUE])) == b"lone")
        r.lpush(QUEUE, message())
        assert wait_for(lambda: len(held) == 1)
        r.lpush(QUEUE, message())
        assert wait_for(lambda: len(held) == 2), "a busy lone worker still takes the next job"
        assert r.get(leader_key([QUEUE])) == b"lone busy"
        other: list[Delivery] = []
        r.set(alive_key("fresh"), 1, px=60_000)
        fresh = Fetcher(r, [QUEUE], other.extend, capacity=8, worker_id="fresh")
        fresh.start()
        try:
            assert wait_for(lambda: r.get(leader_key([QUEUE])) == b"fresh"), "the idle one listens"
        finally:
            fresh.stop()
    finally:
        lone.stop()
