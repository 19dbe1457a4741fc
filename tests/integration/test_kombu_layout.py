"""kombu's private Redis layout, pinned against the installed kombu on a real Redis.

``tasks/kombu_layout.py`` (and the Lua scripts that take its names as KEYS) write what
kombu's Redis transport writes. If a kombu upgrade renames a key, a priority list or
the unacked entry format, these tests fail, not production.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from ops.local.redis_server import LocalRedis
from producers.client import Client
from tasks import lua
from tasks.app import create_app
from tasks.connections import redis_client
from tasks.constants import PREDICT_TASK, WIRE_VERSION
from tasks.errors import ConfigError
from tasks.kombu_layout import (
    PRIORITY_SEP,
    PRIORITY_STEPS,
    UNACKED,
    UNACKED_INDEX,
    check_transport_options,
    decode_unacked_entry,
    delivery_fields,
    encode_unacked_entry,
    list_for,
    queue_lists,
)
from tasks.liveness import HOLDERS
from tasks.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

QUEUE = "inferq.layout.fp32"


@pytest.fixture()
def server() -> Iterator[LocalRedis]:
    with LocalRedis() as s:
        yield s


@pytest.fixture()
def channel(server: LocalRedis) -> Iterator[kombu_redis.Channel]:
    conn = Connection(
        server.url, transport_options={"priority_steps": list(PRIORITY_STEPS), "sep": PRIORITY_SEP}
    )
    try:
        yield conn.default_channel
    finally:
        conn.release()


def send(settings: Settings, priority: int) -> str:
    """One job message exactly as inferq's client sends it; returns its task id."""
    app = create_app(settings)
    res = app.send_task(
        PREDICT_TASK, args=[{"model": "layout", "variant": "fp32"}], queue=QUEUE, priority=priority
    )
    return str(res.id)


def test_unacked_key_names_are_kombus(channel):
    assert channel.unacked_key == UNACKED
    assert channel.unacked_index_key == UNACKED_INDEX
    assert (
        kombu_redis.Channel.unacked_key == UNACKED and kombu_redis.Channel.unacked_index_key == UNACKED_INDEX
    )


def test_priority_lists_are_named_as_kombu_names_them(channel):
    assert list(channel.priority_steps) == list(PRIORITY_STEPS)
    assert list(kombu_redis.PRIORITY_STEPS) == list(PRIORITY_STEPS)  # kombu's default, too
    assert kombu_redis.Channel.sep == PRIORITY_SEP
    assert queue_lists(QUEUE) == [channel._q_for_pri(QUEUE, step) for step in PRIORITY_STEPS]
    for priority in range(10):
        assert list_for(QUEUE, priority) == channel._q_for_pri(QUEUE, priority)


def test_a_sent_job_lands_on_the_list_kombu_names_for_its_priority(server):
    r = redis.Redis.from_url(server.url)
    settings = Settings(broker_url=server.url)
    for priority in (0, 3, 6):
        send(settings, priority)
        assert r.llen(list_for(QUEUE, priority)) == 1, priority


def test_kombus_own_unacked_entry_decodes_with_our_reader(server, channel):
    task_id = send(Settings(broker_url=server.url), 3)
    message = channel.basic_get(QUEUE, no_ack=False)  # kombu's QoS.append records it
    assert message is not None
    r = redis.Redis.from_url(server.url)
    [(tag, raw)] = r.hgetall(UNACKED).items()
    assert r.zscore(UNACKED_INDEX, tag) is not None
    envelope, exchange, routing_key = decode_unacked_entry(raw)
    assert envelope["headers"]["id"] == task_id
    assert delivery_fields(envelope) == (tag.decode(), exchange, routing_key)
    assert routing_key == QUEUE and message.delivery_tag == tag.decode()
    assert decode_unacked_entry(encode_unacked_entry(envelope, exchange, routing_key)) == (
        envelope,
        exchange,
        routing_key,
    )


def test_our_fetch_records_a_message_as_kombu_does_and_kombu_can_restore_it(server, channel):
    settings = Settings(broker_url=server.url)
    r = redis_client(server.url, settings)
    send(settings, 3)
    kombu_msg = channel.basic_get(QUEUE, no_ack=False)
    assert kombu_msg is not None
    [(kombu_tag, kombu_raw)] = r.hgetall(UNACKED).items()
    send(settings, 3)
    fetch = r.register_script(lua.source("fetch"))
    got = fetch(
        keys=[UNACKED, UNACKED_INDEX, HOLDERS, "lead", "wake", "sleepers", *queue_lists(QUEUE)],
        args=[10, 1 << 20, WIRE_VERSION, "", "busy", "", 0, 15],
    )[1:]
    assert len(got) == 3
    list_key, raw, tag = got
    assert list_key.decode() == list_for(QUEUE, 3) and tag != kombu_tag
    ours = decode_unacked_entry(r.hget(UNACKED, tag))
    theirs = decode_unacked_entry(kombu_raw)
    # Same shape, same routing; the message stored byte for byte as it was queued.
    assert ours[1:] == theirs[1:]
    assert ours[0] == orjson.loads(raw)
    assert set(ours[0]) == set(theirs[0]) and set(ours[0]["properties"]) == set(theirs[0]["properties"])
    assert r.zscore(UNACKED_INDEX, tag) is not None
    # kombu's own restore (its sweep of a dead consumer's messages) puts ours back where it belongs.
    channel.qos.restore_by_tag(tag.decode())
    assert r.hget(UNACKED, tag) is None
    assert r.llen(list_for(QUEUE, 3)) == 1


def test_our_fetch_finds_kombus_delivery_fields_without_decoding_the_message(server):
    """fetch.lua reads the delivery tag and routing key from the envelope's tail with string
    patterns; an oversized message is never decoded, so its stub shows what the patterns
    found. If kombu changed how it writes its JSON, the stub's fields would come back empty."""
    settings = Settings(broker_url=server.url)
    r = redis_client(server.url, settings)
    send(settings, 0)
    fetch = r.register_script(lua.source("fetch"))
    _, stub, tag = fetch(
        keys=[UNACKED, UNACKED_INDEX, HOLDERS, "lead", "wake", "sleepers", *queue_lists(QUEUE)],
        args=[1, 10, WIRE_VERSION, "", "busy", "", 0, 15],
    )[1:]
    envelope = orjson.loads(stub)
    assert envelope["inferq_oversized"] > 10
    got_tag, _exchange, routing_key = delivery_fields(envelope)
    assert tag and got_tag == tag.decode() and routing_key == QUEUE
    assert r.hexists(UNACKED, tag) and r.zscore(UNACKED_INDEX, tag) is not None


@pytest.mark.parametrize(
    "options",
    [
        {"global_keyprefix": "app1:"},
        {"sep": ":"},
        {"priority_steps": list(range(10))},
        {"unacked_key": "mine"},
        {"unacked_index_key": "mine_index"},
    ],
)
def test_transport_options_that_move_kombus_keys_are_refused(options):
    [name] = options
    with pytest.raises(ConfigError, match=rf"transport option {name}=.* is not supported by inferq"):
        check_transport_options(options)


def test_our_own_transport_options_are_accepted():
    settings = Settings()
    check_transport_options(create_app(settings).conf.broker_transport_options, settings.broker_url)
    check_transport_options({"global_keyprefix": "", "sep": PRIORITY_SEP, "priority_steps": [0, 3, 6, 9]})


def test_a_broker_url_with_a_key_prefix_is_refused_by_the_settings():
    with pytest.raises(ConfigError, match="global_keyprefix='x:' in the broker URL"):
        Settings(broker_url="redis://127.0.0.1:6379/0?global_keyprefix=x:")


def test_a_client_with_an_app_that_prefixes_keys_is_refused(server):
    settings = Settings(broker_url=server.url)
    app = create_app(settings)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": "a:"}
    with pytest.raises(ConfigError, match="global_keyprefix"):
        Client(settings, app=app)


def test_a_worker_with_a_key_prefix_in_its_broker_url_stops_at_start_up_saying_why(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "worker", "--models", "digits"],
        env={
            "PATH": "/usr/bin:/bin",
            "INFERQ_BROKER_URL": "redis://127.0.0.1:1/0?global_keyprefix=tenant1:",
            "INFERQ_MODELS_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "ConfigError: transport option global_keyprefix='tenant1:'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the job message inferq builds without kombu (tasks/celery_message.py) -------------


def _published_by_celery(server: LocalRedis, priority: int, expires_at: float | None) -> str:
    """What Celery's ``send_task`` (kombu's producer) pushes for an inferq job."""
    from datetime import UTC, datetime

    app = create_app(Settings(broker_url=server.url))
    app.send_task(
        PREDICT_TASK,
        args=[{"model": "layout", "x": b"\x00\x01"}],
        task_id="job-1",
        queue=QUEUE,
        priority=priority,
        expires=None if expires_at is None else datetime.fromtimestamp(expires_at, UTC),
        argsrepr="('layout:fp32', 1 input(s))",
        kwargsrepr="{}",
        ignore_result=True,
    )
    r = redis.Redis.from_url(server.url)
    (raw,) = [r.rpop(lst) for lst in queue_lists(QUEUE) if r.llen(lst)]
    assert raw is not None
    return str(raw.decode())


@pytest.mark.parametrize(("priority", "expires_in"), [(3, None), (0, 30.0), (9, None)])
def test_the_message_inferq_builds_is_the_one_celery_publishes(
    server: LocalRedis, priority: int, expires_in: float | None
) -> None:
    """Same fields in the same order, same list, same body bytes; only per-message ids,
    the sender's reply queue and the expiry's milliseconds (computed at send) differ."""
    import json
    import time

    from tasks.celery_message import encode_task_message

    expires_at = None if expires_in is None else time.time() + expires_in
    theirs = _published_by_celery(server, priority, expires_at)
    lst, ours = encode_task_message(
        "job-1",
        {"model": "layout", "x": b"\x00\x01"},
        queue=QUEUE,
        priority=priority,
        expires_at=expires_at,
        argsrepr="('layout:fp32', 1 input(s))",
    )
    assert lst == list_for(QUEUE, priority)
    a, b = json.loads(theirs), json.loads(ours)

    def shape(doc: object) -> object:  # keys in order, all the way down
        if isinstance(doc, dict):
            return [(k, shape(v)) for k, v in doc.items()]
        return type(doc).__name__

    assert shape(a) == shape(b) or (
        # Celery names its own reply queue; inferq asks for no replies (empty string)
        shape({**a, "properties": {**a["properties"], "reply_to": ""}}) == shape(b)
    )
    for volatile in ("delivery_tag", "reply_to", "expiration"):
        a["properties"].pop(volatile, None)
        b["properties"].pop(volatile, None)
    assert a["headers"].pop("origin").startswith("gen")
    b["headers"].pop("origin")
    assert a == b
    # the Lua fetch's pattern finds the tag and routing key in both
    assert '"delivery_info": {"exchange": "", "routing_key": "' + QUEUE + '"}' in ours
