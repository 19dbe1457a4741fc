"""``ResultWriter.store_encoded`` (``tasks/lua/store.lua``): a batch's records, passed one
argument each, land under each job's own key, published there and in one
``ReplyBatch`` per reply channel, in order; a job cancelled meanwhile keeps its
cancelled record and is in no reply. Real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from ops.local.redis_server import LocalRedis
from tasks.keys import inflight_key, result_key
from tasks.wire import ReplyBatch, StatusRecord
from workers.serving.store import ResultWriter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CHANNELS = ["inferq:reply:" + c * 32 for c in "ab"]


@pytest.fixture()
def rc() -> Iterator[redis.Redis[bytes]]:
    with LocalRedis() as rs:
        r: redis.Redis[bytes] = redis.Redis.from_url(rs.url)
        yield r
        r.close()


def messages(pubsub: Any, wait_s: float = 1.0) -> dict[str, list[bytes]]:
    """What each channel received within ``wait_s``."""
    out: dict[str, list[bytes]] = {}
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        m = pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if m is not None and m["type"] in ("message", "pmessage"):
            out.setdefault(m["channel"].decode(), []).append(m["data"])
    return out


def test_a_batch_lands_under_each_key_and_in_one_reply_per_channel_skipping_a_cancelled_job(
    rc: redis.Redis[bytes],
) -> None:
    ids = [f"job-{i}" for i in range(7)]
    replies = [CHANNELS[0], None, CHANNELS[1], CHANNELS[0], CHANNELS[0], None, CHANNELS[1]]
    records = [StatusRecord.success(j, {"n": i, "pad": "x" * 300 * i}).encode() for i, j in enumerate(ids)]
    cancelled = StatusRecord.cancelled(ids[3]).encode()
    rc.set(result_key(ids[3]), cancelled)
    for j in ids:
        rc.set(inflight_key(j), b"1")
    pubsub = rc.pubsub()
    pubsub.subscribe(*CHANNELS, *(result_key(j) for j in ids))
    for _ in range(len(CHANNELS) + len(ids)):
        pubsub.get_message(timeout=5)  # the confirmations

    ResultWriter(rc, 3600).store_encoded(ids, records, replies)

    stored = [i for i in range(7) if i != 3]
    assert [rc.get(result_key(ids[i])) for i in stored] == [records[i] for i in stored]
    assert rc.get(result_key(ids[3])) == cancelled
    assert rc.ttl(result_key(ids[0])) > 3000
    assert not any(rc.exists(inflight_key(j)) for j in ids)
    got = messages(pubsub)
    assert {k: v for k, v in got.items() if k.startswith("celery")} == {
        result_key(ids[i]): [records[i]] for i in stored
    }
    for channel in CHANNELS:
        (raw,) = got[channel]
        batch = ReplyBatch.decode(raw)
        mine = [i for i in stored if replies[i] == channel]
        assert batch.readable
        assert batch.ids == [ids[i] for i in mine]
        assert [r.encode() if isinstance(r, str) else r for r in batch.records] == [records[i] for i in mine]
    pubsub.close()


def test_a_batch_without_reply_channels_is_stored_and_published_under_its_keys_only(
    rc: redis.Redis[bytes],
) -> None:
    ids = ["solo-1", "solo-2"]
    records = [StatusRecord.success(j, {"ok": True}).encode() for j in ids]
    pubsub = rc.pubsub()
    pubsub.psubscribe("*")
    pubsub.get_message(timeout=5)
    ResultWriter(rc, 60).store_encoded(ids, records)
    assert [rc.get(result_key(j)) for j in ids] == records
    assert messages(pubsub) == {result_key(j): [r] for j, r in zip(ids, records, strict=True)}
    pubsub.close()


def test_a_batch_past_one_slice_of_keys_is_stored_claims_ended_and_a_cancel_kept(
    rc: redis.Redis[bytes],
) -> None:
    """store.lua reads the jobs' keys and deletes their claims one slice of 1,000 at a
    time: 2,500 jobs, a cancelled one in the third slice keeps its record (and is not
    published), every other record is stored and published under its key."""
    ids = [f"many-{i}" for i in range(2500)]
    records = [StatusRecord.success(j, {"n": i}).encode() for i, j in enumerate(ids)]
    for j in ids:
        rc.set(inflight_key(j), b"1")
    cancelled = StatusRecord.cancelled(ids[2100]).encode()
    rc.set(result_key(ids[2100]), cancelled)
    pubsub = rc.pubsub()
    pubsub.subscribe(result_key(ids[2099]), result_key(ids[2100]))
    for _ in range(2):
        pubsub.get_message(timeout=5)

    ResultWriter(rc, 60).store_encoded(ids, records)

    expected = [cancelled if i == 2100 else r for i, r in enumerate(records)]
    assert rc.mget([result_key(j) for j in ids]) == expected
    assert rc.exists(*(inflight_key(j) for j in ids)) == 0
    assert messages(pubsub) == {result_key(ids[2099]): [records[2099]]}
    pubsub.close()


COLUMNS = "inferq:reply:c2." + "cd" * 16  # a client that reads version 2


def test_a_channel_that_reads_columns_gets_its_columns_as_sent_and_an_older_client_version_1(
    rc: redis.Redis[bytes],
) -> None:
    """One store call, two clients: the newer one's columns are published unread, the
    older one (a channel without the mark) gets version 1 built from the records."""
    ids = [f"job-{i}" for i in range(5)]
    replies = [COLUMNS, CHANNELS[0], COLUMNS, None, CHANNELS[0]]
    records = [StatusRecord.success(j, {"n": i}).encode() for i, j in enumerate(ids)]
    columns = b"\x81\xa1v\x02 any bytes the worker packed"
    pubsub = rc.pubsub()
    pubsub.subscribe(COLUMNS, CHANNELS[0])
    for _ in range(2):
        pubsub.get_message(timeout=5)

    ResultWriter(rc, 3600).store_encoded(ids, records, replies, {COLUMNS: columns})

    assert [rc.get(result_key(j)) for j in ids] == records
    got = messages(pubsub)
    assert got[COLUMNS] == [columns]
    (raw,) = got[CHANNELS[0]]
    batch = ReplyBatch.decode(raw)
    assert batch.readable and batch.version == 1 and batch.ids == [ids[1], ids[4]]
    pubsub.close()


def test_a_columns_channel_one_of_whose_jobs_was_cancelled_gets_version_1_without_it(
    rc: redis.Redis[bytes],
) -> None:
    """The columns hold every row the worker computed; a job cancelled meanwhile keeps its
    cancelled record, so its client must not hear a result for it: that channel gets the
    stored records (version 1) instead, and another channel its columns still."""
    other = "inferq:reply:c2." + "ef" * 16
    ids = [f"job-{i}" for i in range(4)]
    replies = [COLUMNS, COLUMNS, other, COLUMNS]
    records = [StatusRecord.success(j, {"n": i}).encode() for i, j in enumerate(ids)]
    cancelled = StatusRecord.cancelled(ids[1]).encode()
    rc.set(result_key(ids[1]), cancelled)
    pubsub = rc.pubsub()
    pubsub.subscribe(COLUMNS, other)
    for _ in range(2):
        pubsub.get_message(timeout=5)

    ResultWriter(rc, 3600).store_encoded(ids, records, replies, {COLUMNS: b"cols-a", other: b"cols-b"})

    assert rc.get(result_key(ids[1])) == cancelled
    got = messages(pubsub)
    assert got[other] == [b"cols-b"]
    (raw,) = got[COLUMNS]
    batch = ReplyBatch.decode(raw)
    assert batch.readable and batch.version == 1
    assert batch.ids == [ids[0], ids[3]]
    assert [r.encode() if isinstance(r, str) else r for r in batch.records] == [records[0], records[3]]
    pubsub.close()
