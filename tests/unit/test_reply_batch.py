"""The reply channel's wire form (``ReplyBatch``) and how a message names the channel."""

from __future__ import annotations

import json

import msgpack
import pytest

from tasks.celery_message import encode_task_message, with_reply_to
from tasks.wire import REPLY_VERSION, ReplyBatch, StatusRecord
from workers.broker.envelope import Rejected, read_message

CHANNEL = "inferq:reply:" + "ab" * 16


def test_a_reply_batch_round_trips_its_ids_and_records_in_order() -> None:
    ids = ["a1", "b-2", "c3"]
    records = [StatusRecord.started(j).encode() for j in ids]
    batch = ReplyBatch.decode(ReplyBatch(ids, records).encode())
    assert batch.readable and batch.version == REPLY_VERSION
    assert batch.ids == ids
    assert [StatusRecord.parse(r, j) for r, j in zip(batch.records, ids, strict=True)] == [
        StatusRecord.started(j) for j in ids
    ]


def test_a_batch_as_lua_cmsgpack_writes_it_reads_the_same() -> None:
    """store.lua packs strings as msgpack str, a map with keys in any order."""
    data = msgpack.packb({"records": ['{"status": "SUCCESS"}'], "ids": ["j1"], "v": 1}, use_bin_type=False)
    batch = ReplyBatch.decode(data)
    assert batch.readable and batch.ids == ["j1"] and len(batch.records) == 1


@pytest.mark.parametrize("v", [3, 0, "1", True, None])
def test_a_batch_in_another_version_is_refused_with_the_ids_it_names(v: object) -> None:
    data = msgpack.packb({"v": v, "ids": ["j1", "j2"], "records": [b"x", b"y"]})
    batch = ReplyBatch.decode(data)
    assert not batch.readable
    assert batch.records == [] and batch.ids == ["j1", "j2"]  # the reader reads their keys instead


@pytest.mark.parametrize(
    "data",
    [
        b"not msgpack \xc1",
        msgpack.packb([1, ["j1"], [b"x"]]),
        msgpack.packb({"v": 1, "ids": ["j1", "j2"], "records": [b"x"]}),  # lengths differ
        None,
    ],
)
def test_an_unreadable_batch_is_refused_not_misread(data: bytes | None) -> None:
    batch = ReplyBatch.decode(data)
    assert not batch.readable and batch.records == []


def test_naming_the_reply_channel_afterwards_gives_the_same_message_as_building_with_it() -> None:
    kw = {"queue": "inferq.m.fp32", "priority": 3, "argsrepr": "('m:fp32', 1 input(s))", "now": 5.0}
    _, plain = encode_task_message("j1", {"model": "m"}, **kw)  # type: ignore[arg-type]
    _, built = encode_task_message("j1", {"model": "m"}, reply_to=CHANNEL, **kw)  # type: ignore[arg-type]
    a, b = json.loads(with_reply_to(plain, CHANNEL)), json.loads(built)
    for doc in (a, b):
        doc["properties"].pop("delivery_tag")
    assert a == b and a["properties"]["reply_to"] == CHANNEL
    assert json.loads(plain)["properties"]["reply_to"] == ""


def test_the_worker_honours_only_an_inferq_reply_channel() -> None:
    _, ours = encode_task_message("j1", {"model": "m"}, queue="q", priority=3, reply_to=CHANNEL)
    assert read_message(ours.encode()) == ([("j1", {"model": "m"})], CHANNEL)
    # A plain Celery client names its RPC queue (a uuid): not ours to publish to.
    for celery_reply in ("d3b0c2a4-6a0e-3c1b-9a8f-1f2e3d4c5b6a", "", "celery-task-meta-x"):
        _, theirs = encode_task_message("j1", {"model": "m"}, queue="q", priority=3, reply_to=celery_reply)
        assert read_message(theirs.encode())[1] is None


def test_a_rejected_message_keeps_its_reply_channel() -> None:
    _, msg = encode_task_message("j1", {"model": "m"}, queue="q", priority=3, reply_to=CHANNEL)
    doc = json.loads(msg)
    doc["headers"]["task"] = "os.system"
    with pytest.raises(Rejected) as err:
        read_message(json.dumps(doc).encode())
    assert err.value.job_id == "j1" and err.value.reply_to == CHANNEL
