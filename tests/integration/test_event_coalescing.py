"""Task events of batches in quick succession go out together, and none wait for long.

A publish through kombu cost the worker about as much CPU as a 64-job batch's events
themselves, so ``WorkerCore`` lets a batch's events wait (``EVENTS_DELAY_S``) to share
one ``task.multi`` message with the next batches', and its completer thread publishes
whatever is left once it has been idle that long. Real redis-server, real Celery event
dispatcher; the messages are read where Flower's receiver reads them (the fanout
channel's pub/sub).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from ops.local.redis_server import LocalRedis
from tasks.app import create_app
from workers.serving.batcher import Completer
from workers.serving.events import FLUSH_AT, EventSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture()
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as rs:
        yield rs


def event_messages(pubsub: Any, wait_s: float) -> list[list[dict[str, Any]]]:
    """The ``task.multi`` messages published within ``wait_s``: each one's list of events."""
    out: list[list[dict[str, Any]]] = []
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        m = pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if m is None or m["type"] != "pmessage":
            continue
        envelope = json.loads(m["data"])
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        out.append(orjson.loads(body))
    return out


@pytest.fixture()
def sink_and_channel(server: LocalRedis) -> Iterator[tuple[EventSink, Any]]:
    r: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    pubsub = r.pubsub()
    pubsub.psubscribe("*celeryev*")
    pubsub.get_message(timeout=5)  # the subscription's confirmation
    sink = EventSink(create_app(server.client_settings()), "coalescing-test")
    yield sink, pubsub
    sink.close()
    pubsub.close()
    r.close()


def test_events_of_back_to_back_batches_share_one_message_sent_once_the_completer_is_idle(
    sink_and_channel: tuple[EventSink, Any],
) -> None:
    sink, pubsub = sink_and_channel
    completer = Completer(depth=8, on_idle=sink.flush, idle_s=0.2)
    completer.start()
    batches = [[f"job-{b}-{i}" for i in range(64)] for b in range(5)]
    all_submitted = threading.Event()

    def complete(ids: list[str]) -> None:
        assert all_submitted.wait(10)  # the batches then run back to back
        sink.send_jobs("task-succeeded", ids, result="<outputs>", runtime=0.001)
        sink.flush(older_than_s=30.0)  # young events wait for later batches'

    t0 = time.monotonic()
    for ids in batches:
        completer.submit(lambda ids=ids: complete(ids))
    all_submitted.set()
    try:
        messages = event_messages(pubsub, wait_s=2.0)
    finally:
        completer.stop(timeout=10)
    assert len(messages) == 1, f"{len(messages)} messages for 5 back-to-back batches"
    assert [e["uuid"] for e in messages[0]] == [jid for ids in batches for jid in ids]
    assert {e["type"] for e in messages[0]} == {"task-succeeded"}
    assert time.monotonic() - t0 < 30.0, "the events waited for their age, not for the idle completer"


def test_a_flush_sends_events_older_than_asked_and_any_once_the_buffer_is_full(
    sink_and_channel: tuple[EventSink, Any],
) -> None:
    sink, pubsub = sink_and_channel
    sink.send_jobs("task-succeeded", ["old-1", "old-2"])
    time.sleep(0.05)
    sink.flush(older_than_s=0.02)
    (sent,) = event_messages(pubsub, wait_s=0.5)
    assert [e["uuid"] for e in sent] == ["old-1", "old-2"]

    sink.send_jobs("task-succeeded", ["young"])
    sink.flush(older_than_s=30.0)
    assert event_messages(pubsub, wait_s=0.3) == []

    many = [f"job-{i}" for i in range(FLUSH_AT)]
    sink.send_jobs("task-succeeded", many)
    sink.flush(older_than_s=30.0)
    (full,) = event_messages(pubsub, wait_s=0.5)
    assert [e["uuid"] for e in full] == ["young", *many]


def test_stopping_the_completer_sends_the_events_its_last_batch_left_waiting(
    sink_and_channel: tuple[EventSink, Any],
) -> None:
    sink, pubsub = sink_and_channel
    completer = Completer(on_idle=sink.flush, idle_s=30.0)
    completer.start()
    completer.submit(lambda: sink.send_jobs("task-failed", ["last"], exception="BadInput('x')"))
    completer.submit(lambda: sink.flush(older_than_s=30.0))
    completer.stop(timeout=10)
    (sent,) = event_messages(pubsub, wait_s=0.5)
    assert [(e["uuid"], e["type"]) for e in sent] == [("last", "task-failed")]


def test_celerys_event_receiver_reads_every_event_of_a_message_sent_without_kombu(server: LocalRedis) -> None:
    """The message is built here, not by kombu's publish: Celery's ``EventReceiver`` (what
    Flower runs) must still take it off the fanout and hand over each event."""
    app = create_app(server.client_settings())
    got: list[dict[str, Any]] = []

    def seen(*uuids: str) -> bool:
        return {e.get("uuid") for e in list(got)} >= set(uuids)

    def wait_for(*uuids: str, send: Callable[[], None]) -> None:
        deadline = time.monotonic() + 10
        while not seen(*uuids) and time.monotonic() < deadline:
            send()
            time.sleep(0.2)

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": got.append})

        def drain() -> None:
            with contextlib.suppress(Exception):  # should_stop ends it within a second
                for _ in receiver.consume(limit=None, timeout=30, wakeup=False):
                    pass

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        sink = EventSink(app, "receiver-test")
        try:

            def probe() -> None:  # sent again until the receiver has subscribed
                sink.send_jobs("task-started", ["probe"])
                sink.flush()

            wait_for("probe", send=probe)
            assert seen("probe"), "the receiver never heard a probe"
            sink.send_jobs("task-succeeded", ["a", "b", "c"], result="<outputs>", runtime=0.01)
            sink.flush()
            wait_for("a", "b", "c", send=lambda: None)
        finally:
            receiver.should_stop = True
            t.join(timeout=10)
            sink.close()
    mine = [(e["uuid"], e["type"], e["hostname"]) for e in got if e.get("uuid") != "probe"]
    assert mine == [(u, "task-succeeded", "receiver-test") for u in "abc"]
    assert sink._fanout is not None, "the events went through kombu's publish, not the direct one"


def test_each_event_carries_its_own_id_and_the_fields_given_whatever_the_id_holds(
    sink_and_channel: tuple[EventSink, Any],
) -> None:
    """``send_jobs`` splices each id into one encoded event: plain ids as they are, an
    id holding what JSON must escape (a Celery producer may name its task anything)
    through orjson. Each event must still read back with its own id and every field."""
    sink, pubsub = sink_and_channel
    plain = ["a1", "b-2", "c3"]
    odd = ['say "hi"', "back\\slash", "tab\there", "é"]
    sink.send_jobs("task-succeeded", plain, result="<outputs>", runtime=0.25)
    sink.send_jobs("task-failed", ["x", *odd], exception="BadInput('no')", traceback=None)
    sink.flush()
    (sent,) = event_messages(pubsub, wait_s=0.5)
    assert [e["uuid"] for e in sent] == [*plain, "x", *odd]
    assert [e["type"] for e in sent] == ["task-succeeded"] * 3 + ["task-failed"] * 5
    assert all(e["runtime"] == 0.25 and e["result"] == "<outputs>" for e in sent[:3])
    assert all(e["exception"] == "BadInput('no')" and e["traceback"] is None for e in sent[3:])
    assert all(e["hostname"] == "coalescing-test" and "clock" in e and "timestamp" in e for e in sent)
