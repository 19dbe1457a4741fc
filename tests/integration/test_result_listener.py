"""producers/listener.py ``ResultListener`` against a private redis-server.

Records are written as workers write them: a ``StatusRecord`` SET at the job's result
key and PUBLISHed on the channel of the same name (``tasks/lua/store.lua``, run here
as the worker runs it), or only one of the two to tell the listener's two paths apart
(the subscription, and the read after each subscription is confirmed).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from ops.local.redis_server import LocalRedis
from producers.listener import Arrival, ResultListener
from tasks.connections import redis_client
from tasks.errors import BadInput, Timeout
from tasks.keys import result_key
from tasks.schema import Timing
from tasks.settings import Settings
from tasks.wire import ReplyBatch, Result, StatusRecord
from workers.serving.store import ResultWriter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def client_for(server: LocalRedis) -> redis.Redis[bytes]:
    return redis_client(server.url, Settings(broker_url=server.url))


@pytest.fixture()
def rc(own_redis: LocalRedis) -> Iterator[redis.Redis[bytes]]:
    c = client_for(own_redis)
    yield c
    c.close()


@pytest.fixture()
def make_listener() -> Iterator[Callable[[redis.Redis[bytes]], ResultListener]]:
    """Listeners that are closed (and whose threads must end) at the end of the test."""
    made: list[ResultListener] = []

    def factory(client: redis.Redis[bytes]) -> ResultListener:
        lst = ResultListener(client)
        made.append(lst)
        return lst

    yield factory
    for lst in made:
        lst.close()
        assert lst._thread is None or not lst._thread.is_alive(), "a listener thread outlived its test"


@pytest.fixture()
def listener(rc: redis.Redis[bytes], make_listener) -> ResultListener:
    return make_listener(rc)


def new_id() -> str:
    return uuid.uuid4().hex


def result_doc(jid: str) -> dict:
    now = time.time()
    timing = Timing(
        enqueued_at=now,
        received_at=now,
        started_at=now,
        finished_at=now,
        queue_ms=0.0,
        batch_wait_ms=0.0,
        compute_ms=1.0,
        processing_ms=1.0,
        batch_size=1,
    )
    return Result(jid, "m", "v", "1", {"y": np.zeros(2, np.float32)}, timing).to_wire()


def success(jid: str) -> bytes:
    return StatusRecord.success(jid, result_doc(jid)).encode()


def store(r: redis.Redis[bytes], jid: str, raw: bytes) -> None:
    """SET + PUBLISH in one script, exactly as a worker stores a record."""
    ResultWriter(r, 3600).store_encoded([jid], [raw])


def subscribers(r: redis.Redis[bytes], jid: str) -> int:
    return int(dict(r.pubsub_numsub(result_key(jid)))[result_key(jid).encode()])


def until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.01)


def subscribed(r: redis.Redis[bytes], jid: str) -> None:
    until(lambda: subscribers(r, jid) == 1, what=f"the listener's subscription to {jid}")


def wait_in_thread(lst: ResultListener, ids: list[str], timeout: float) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["out"] = lst.wait(ids, timeout=timeout)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def check_success(arrival: Arrival, jid: str, before: float, after: float) -> None:
    record, seen_at = arrival
    assert record.state == "SUCCESS"
    assert record.job_id == jid
    result = record.to_result(cached=False)
    assert result.model == "m" and result.variant == "v"
    np.testing.assert_array_equal(result.outputs["y"], np.zeros(2, np.float32))
    assert before <= seen_at <= after


def test_result_stored_and_published_after_watch_is_delivered_to_wait(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jid = new_id()
    listener.watch([jid])
    subscribed(rc, jid)
    before = time.time()
    store(rc, jid, success(jid))
    out = listener.wait([jid], timeout=10)
    check_success(out[jid], jid, before, time.time())
    until(lambda: subscribers(rc, jid) == 0, what="unsubscribing a finished job")


def test_a_publish_alone_wakes_the_waiter(rc: redis.Redis[bytes], listener: ResultListener) -> None:
    """The subscription path on its own: nothing is stored for the read to find."""
    jid = new_id()
    listener.watch([jid])
    subscribed(rc, jid)
    before = time.time()
    rc.publish(result_key(jid), success(jid))
    out = listener.wait([jid], timeout=10)
    check_success(out[jid], jid, before, time.time())


def test_result_stored_before_watch_without_a_publish_seen_is_found_by_the_read(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jid = new_id()
    rc.set(result_key(jid), success(jid))  # stored, never published
    before = time.time()
    out = listener.wait([jid], timeout=10)
    check_success(out[jid], jid, before, time.time())


def test_a_job_its_watcher_is_sending_is_awaited_on_the_reply_channel_without_a_subscription_or_read(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    """Nothing can be stored for a job before its sender sends it: once the reply channel
    is confirmed the sender may send; the job gets no subscription of its own, its key is
    not read, and its record arrives in the worker's batch for this client."""
    jid = new_id()
    rc.set(result_key(jid), success(jid))  # never published: only a read would find it
    sub = listener.watch([jid], sending=[jid])
    assert sub.wait(5), "the reply channel was not confirmed"
    assert subscribers(rc, jid) == 0, "a job sent by this client got a subscription of its own"
    with pytest.raises(Timeout):
        listener.wait([jid], timeout=0.3)
    before = time.time()
    ResultWriter(rc, 3600).store_encoded([jid], [success(jid)], [listener.reply_channel])
    out = listener.wait([jid], timeout=10)
    check_success(out[jid], jid, before, time.time())
    # once the channel is confirmed, a send waits for nothing
    assert listener.watch([new_id()], sending=[]).done.is_set()
    assert listener.watch([j := new_id()], sending=[j]).done.is_set()


def test_a_reply_batch_in_another_version_is_answered_by_reading_the_keys_it_names(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jids = [new_id() for _ in range(3)]
    assert listener.watch(jids, sending=jids).wait(5)
    for jid in jids:
        rc.set(result_key(jid), success(jid))
    rc.publish(listener.reply_channel, ReplyBatch(jids, [], version=99).encode())
    out = listener.wait(jids, timeout=10)
    assert sorted(out) == sorted(jids)


def test_a_reply_batch_carries_many_jobs_in_one_message(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jids = [new_id() for _ in range(50)]
    assert listener.watch(jids, sending=jids).wait(5)
    other = "inferq:reply:" + "0" * 32  # another client's: its jobs are not ours
    replies = [listener.reply_channel] * 50
    replies[7] = other
    pubsub = rc.pubsub()
    pubsub.subscribe(listener.reply_channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    ResultWriter(rc, 3600).store_encoded(jids, [success(j) for j in jids], replies)
    msg = pubsub.get_message(timeout=5)
    assert msg is not None and msg["type"] == "message"
    batch = ReplyBatch.decode(msg["data"])
    assert batch.readable and batch.ids == [j for i, j in enumerate(jids) if i != 7]
    assert pubsub.get_message(timeout=0.3) is None, "more than one message for one batch"
    pubsub.close()
    out = listener.wait([j for i, j in enumerate(jids) if i != 7], timeout=10)
    assert len(out) == 49
    with pytest.raises(Timeout):  # published to the other client's channel only
        listener.wait([jids[7]], timeout=0.3)


def test_failure_record_is_delivered_with_its_error(rc: redis.Redis[bytes], listener: ResultListener) -> None:
    jid = new_id()
    listener.watch([jid])
    subscribed(rc, jid)
    store(rc, jid, StatusRecord.failure(jid, BadInput("x")).encode())
    record, _ = listener.wait([jid], timeout=10)[jid]
    assert record.state == "FAILURE"
    with pytest.raises(BadInput, match=r"^x$"):
        record.to_result(cached=False)


def test_started_records_do_not_wake_a_waiter_but_the_later_success_does(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jid = new_id()
    rc.set(result_key(jid), StatusRecord.started(jid).encode())  # found by the read: not ready
    thread, box = wait_in_thread(listener, [jid], timeout=30)
    subscribed(rc, jid)
    store(rc, jid, StatusRecord.started(jid).encode())  # seen on the channel: not ready
    thread.join(0.7)
    assert thread.is_alive() and box == {}, f"a STARTED record woke the waiter: {box}"
    assert subscribers(rc, jid) == 1, "the listener gave up its subscription on a STARTED record"
    before = time.time()
    store(rc, jid, success(jid))
    thread.join(10)
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
    check_success(box["out"][jid], jid, before, time.time())


def test_wait_timeout_names_how_many_of_how_many_jobs_are_missing(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    missing_a, done, missing_b = new_id(), new_id(), new_id()
    store(rc, done, success(done))
    t0 = time.monotonic()
    with pytest.raises(Timeout, match=r"timed out after 1\.5 s waiting for 2 of 3 job\(s\)"):
        listener.wait([missing_a, done, missing_b], timeout=1.5)
    assert time.monotonic() - t0 >= 1.5
    # The job that did arrive is still there for the next wait.
    assert listener.wait([done], timeout=5)[done][0].state == "SUCCESS"


def test_two_waiters_on_the_same_id_both_get_the_record(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jid = new_id()
    first, box1 = wait_in_thread(listener, [jid], timeout=30)
    second, box2 = wait_in_thread(listener, [jid], timeout=30)
    subscribed(rc, jid)
    # White box: both waiters are registered before the result arrives.
    until(lambda: listener._waiters.get(jid) == 2, what="two registered waiters")
    # Published only: a waiter that found the arrival gone could not read it back.
    rc.publish(result_key(jid), success(jid))
    first.join(10)
    second.join(10)
    for box in (box1, box2):
        assert "error" not in box, box.get("error")
        assert box["out"][jid][0].state == "SUCCESS"
    assert box1["out"][jid] == box2["out"][jid]
    # The last reader forgets it: nothing is held for this job any more.
    assert jid not in listener._arrived and jid not in listener._events and jid not in listener._waiters


def test_an_arrival_nobody_waits_for_is_dropped_after_keep_arrived_s(
    rc: redis.Redis[bytes], listener: ResultListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ResultListener, "KEEP_ARRIVED_S", 1.0)
    old, fresh, other = new_id(), new_id(), new_id()
    listener.watch([old])
    store(rc, old, success(old))
    until(lambda: old in listener._arrived, what="the unwaited arrival")
    time.sleep(1.3)  # older than KEEP_ARRIVED_S now
    listener.watch([fresh])
    store(rc, fresh, success(fresh))
    until(lambda: fresh in listener._arrived, what="the fresh arrival")
    # The prune runs every 5 s (a literal in _listen) while the listener is subscribed:
    # make the last prune long ago, and give it a subscription to keep it turning.
    listener._pruned_at = time.monotonic() - 60
    listener.watch([other])
    until(lambda: old not in listener._arrived, what="dropping the old arrival")
    assert old not in listener._events and old not in listener._watched_at
    assert fresh in listener._arrived, "an arrival younger than KEEP_ARRIVED_S was dropped"
    assert other in listener._events, "a watch still awaited was dropped"
    # Dropping loses nothing: a later wait reads the stored record again.
    assert listener.wait([old], timeout=5)[old][0].state == "SUCCESS"


@pytest.fixture()
def restartable_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A server with a work folder of its own, so ``stop`` then ``start`` reuses port and
    folder (own_redis's temporary folder is deleted by its first ``stop``)."""
    server = LocalRedis(workdir=tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("outage_s", [0.0, 2.5], ids=["quick-restart", "outage-past-client-retries"])
def test_listener_survives_a_redis_restart(
    restartable_redis: LocalRedis, make_listener, outage_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A quick restart is bridged by redis-py's own retries; a longer outage by the
    listener's reconnect loop (it logs that it lost Redis)."""
    caplog.set_level(logging.WARNING, logger="producers.listener")
    r = client_for(restartable_redis)
    try:
        listener = make_listener(r)
        before_restart, after_restart, sent = new_id(), new_id(), new_id()
        listener.watch([before_restart])
        subscribed(r, before_restart)
        assert listener.watch([sent], sending=[sent]).wait(5)  # awaited on the reply channel
        restartable_redis.stop()
        time.sleep(outage_s)
        restartable_redis.start()
        # Stored while the listener may still be away (found by the read after it resubscribes)...
        store(r, before_restart, success(before_restart))
        ResultWriter(r, 3600).store_encoded([sent], [success(sent)], [listener.reply_channel])
        assert listener.wait([before_restart], timeout=30)[before_restart][0].state == "SUCCESS"
        assert listener.wait([sent], timeout=30)[sent][0].state == "SUCCESS"
        # ... and a job watched after the restart is delivered on the new connection.
        listener.watch([after_restart])
        subscribed(r, after_restart)
        store(r, after_restart, success(after_restart))
        assert listener.wait([after_restart], timeout=10)[after_restart][0].state == "SUCCESS"
        if outage_s:
            assert any("result listener lost Redis" in rec.getMessage() for rec in caplog.records)
    finally:
        r.close()


def test_close_stops_the_thread_and_drops_its_subscriptions(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    jid = new_id()
    before = {t for t in threading.enumerate() if t.name == "inferq-results"}
    listener.watch([jid])
    ours = {t for t in threading.enumerate() if t.name == "inferq-results"} - before
    assert len(ours) == 1
    subscribed(rc, jid)
    t0 = time.monotonic()
    listener.close()
    assert time.monotonic() - t0 < 3.0
    (thread,) = ours
    assert not thread.is_alive()
    until(lambda: subscribers(rc, jid) == 0, what="the closed listener's subscription to go")


def test_results_nobody_waits_for_are_bounded_and_a_late_wait_keeps_the_arrival_time(
    rc: redis.Redis[bytes], listener: ResultListener, monkeypatch: pytest.MonkeyPatch
):
    """A web backend that submits here and polls elsewhere: 3000 results arrive, unwaited."""
    monkeypatch.setattr(ResultListener, "KEEP_ARRIVED_MAX", 100)
    ids = [new_id() for _ in range(3000)]
    listener.watch(ids)
    time.sleep(0.5)  # subscribed
    stored_at = time.time()
    for jid in ids:
        store(rc, jid, success(jid))
    deadline = time.monotonic() + 30
    while any(not listener._ready(j) for j in ids[-10:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(listener._arrived) <= 100, f"{len(listener._arrived)} unwaited results held"
    time.sleep(1.0)
    record, arrived = listener.wait([ids[0]], timeout=10)[ids[0]]  # evicted long ago: read again
    assert record.job_id == ids[0] and record.ready
    assert stored_at <= arrived < stored_at + 0.9, "the end-to-end stamp is when it arrived, not when read"


def test_an_idle_listener_with_jobs_pending_uses_no_cpu(listener: ResultListener):
    listener.watch([new_id() for _ in range(50)])  # pending, never answered
    time.sleep(0.5)
    before = time.process_time()
    time.sleep(3.0)
    used = time.process_time() - before
    # The old 2 ms poll used about 2% of a core (0.066 s in 3 s); a sleeping thread, none.
    assert used < 0.04, f"{used:.3f} s of CPU in 3 s idle"


def test_a_new_watch_wakes_the_sleeping_listener_at_once(rc: redis.Redis[bytes], listener: ResultListener):
    listener.watch([new_id()])  # something pending: the thread sleeps on the socket
    time.sleep(0.5)
    jid = new_id()
    store(rc, jid, success(jid))  # already stored: found by the read after subscribing
    t0 = time.monotonic()
    listener.wait([jid], timeout=5)
    assert time.monotonic() - t0 < 0.5, "a watch waited for the listener's idle timeout"


def test_a_job_sent_to_an_older_worker_that_publishes_only_under_its_id_is_still_found(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    """A worker from before reply channels ignores ``reply_to``: once the reply channel has
    been silent for ``REPLY_SILENCE_S``, the job is watched on its own channel too."""
    listener.REPLY_SILENCE_S = 0.5
    jid = new_id()
    assert listener.watch([jid], sending=[jid]).wait(5)
    store(rc, jid, success(jid))  # SET + PUBLISH under its own key only
    t0 = time.monotonic()
    assert listener.wait([jid], timeout=10)[jid][0].state == "SUCCESS"
    assert time.monotonic() - t0 < 5


def test_collect_hands_each_result_over_as_it_arrives_not_after_the_last(
    rc: redis.Redis[bytes], listener: ResultListener
) -> None:
    """``wait_all`` reads results while the rest are still coming (``each``): here the
    first half of the jobs' results are stored (ids are taken in order, as a bulk
    submission's results arrive), and ``each`` must have had all of them while
    ``collect`` still waits for the other half; then the rest, each id once."""
    jids = [new_id() for _ in range(40)]
    assert listener.watch(jids, sending=jids).wait(5)
    seen: list[str] = []
    box: dict = {}

    def run() -> None:
        try:
            box["out"] = listener.collect(jids, 10, each=lambda jid, arrival: seen.append(jid))
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    first, second = jids[:20], jids[20:]
    ResultWriter(rc, 3600).store_encoded(first, [success(j) for j in first], [listener.reply_channel] * 20)
    until(lambda: sorted(seen) == sorted(first), what="each result of the first half handed over")
    assert t.is_alive() and "out" not in box, "collect returned before the second half arrived"
    ResultWriter(rc, 3600).store_encoded(second, [success(j) for j in second], [listener.reply_channel] * 20)
    t.join(10)
    assert "error" not in box, box.get("error")
    assert sorted(seen) == sorted(jids) and len(seen) == len(set(seen))
    assert set(box["out"]) == set(jids)


def test_collect_blocks_once_per_arriving_batch_not_once_per_job(
    rc: redis.Redis[bytes], listener: ResultListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results of a batch arrive together: once ``collect`` has waited for a batch's
    first job, it takes the rest of the batch as a run under one lock, with no wake-up
    (``Latch``) made per job. Four batches of 100 here: a latch per job was 400."""
    import producers.listener as listener_module
    from producers.latch import Latch

    made: list[int] = []

    class CountedLatch(Latch):
        __slots__ = ()

        def __init__(self) -> None:
            made.append(1)
            super().__init__()

    monkeypatch.setattr(listener_module, "Latch", CountedLatch)
    jids = [new_id() for _ in range(400)]
    assert listener.watch(jids, sending=jids).wait(5)
    box: dict = {}

    def run() -> None:
        try:
            box["out"] = listener.collect(jids, 20)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    writer = ResultWriter(rc, 3600)
    for start in range(0, 400, 100):
        blocked = start // 100 + 1
        until(lambda blocked=blocked: len(made) >= blocked, what="collect blocked on the next batch")
        part = jids[start : start + 100]
        writer.store_encoded(part, [success(j) for j in part], [listener.reply_channel] * 100)
    t.join(20)
    assert "error" not in box, box.get("error")
    assert set(box["out"]) == set(jids)
    assert len(made) <= 8, f"{len(made)} latches for 4 batches"


def test_a_watch_that_hears_nothing_lapses_after_keep_watch_s_and_a_younger_one_stays(
    rc: redis.Redis[bytes], listener: ResultListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Watches are kept oldest first and the prune stops at the first young one (it used
    to walk all of them under the lock): the lapsed one is dropped and unsubscribed, the
    younger ones stay, and a later wait on the lapsed one still gets its result."""
    monkeypatch.setattr(ResultListener, "KEEP_WATCH_S", 1.0)
    old = [new_id() for _ in range(3)]
    listener.watch(old)
    until(lambda: all(subscribers(rc, j) == 1 for j in old), what="the old watches subscribed")
    time.sleep(1.3)  # older than KEEP_WATCH_S now
    young = new_id()
    listener.watch([young])
    until(lambda: subscribers(rc, young) == 1, what="the young watch subscribed")
    listener._pruned_at = time.monotonic() - 60  # the prune is due (every 5 s otherwise)
    listener.watch([new_id()])  # a turn of the listener's loop
    until(lambda: all(j not in listener._events for j in old), what="the lapsed watches dropped")
    until(lambda: all(subscribers(rc, j) == 0 for j in old), what="the lapsed watches unsubscribed")
    assert young in listener._events and subscribers(rc, young) == 1, "a young watch was dropped"
    store(rc, old[0], success(old[0]))
    assert listener.wait([old[0]], timeout=5)[old[0]][0].state == "SUCCESS"
