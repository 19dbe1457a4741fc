"""Each Lua reader in Redis agrees with its Python twin in ``tasks/wire/`` on the same records.

The cache check runs in Redis (``tasks/lua/status_record.lua``, inside the claim
script), the client reads the same record in Python (``StatusRecord``); the claim is
written in Lua and read by tools in Python (``Claim``); the oversized-message stub is
written in Lua and read in Python (``OversizedStub``). If one side changes alone,
these fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from ops.local.redis_server import LocalRedis
from producers.claims import CLAIMED, FOUND, SHARED, Claims
from tasks import constants as C
from tasks import lua
from tasks.errors import BadInput, Expired, InferqError, PayloadTooLarge, TransientError, cacheable_types
from tasks.keys import inflight_key, result_key
from tasks.kombu_layout import UNACKED, UNACKED_INDEX, queue_lists
from tasks.liveness import HOLDERS
from tasks.schema import Timing
from tasks.wire import Claim, OversizedStub, Result, StatusRecord

pytestmark = pytest.mark.integration

TIMING = Timing(1.0, 1.1, 1.2, 1.3, 100.0, 100.0, 100.0, 200.0, 1)
GOOD = Result("r", "m", "v", "1", {"y": np.zeros(3, np.float32)}, TIMING).to_wire()


def doc(**fields: Any) -> bytes:
    return orjson.dumps(fields)


# Records as workers write them, as foreign or older writers might, and plain garbage.
RECORDS: dict[str, bytes] = {
    "success": StatusRecord.success("a", GOOD).encode(),
    "bad input": StatusRecord.failure("a", BadInput("x")).encode(),
    "too large": StatusRecord.failure("a", PayloadTooLarge("x")).encode(),
    "transient": StatusRecord.failure("a", TransientError("x")).encode(),
    "expired": StatusRecord.failure("a", Expired("x")).encode(),
    "base error": StatusRecord.failure("a", InferqError("x")).encode(),
    "started": StatusRecord.started("a").encode(),
    "success without v": doc(status="SUCCESS", result=GOOD, task_id="a"),
    "bad input without v": doc(status="FAILURE", result={"exc_type": "BadInput", "exc_message": ["x"]}),
    "success v2": doc(status="SUCCESS", result=GOOD, v=2),
    "bad input v2": doc(status="FAILURE", result={"exc_type": "BadInput"}, v=2),
    "v as float": doc(status="SUCCESS", result=GOOD, v=1.0),
    "v as string": doc(status="SUCCESS", result=GOOD, v="1"),
    "v as bool": doc(status="SUCCESS", result=GOOD, v=True),
    "success, result null": doc(status="SUCCESS", result=None, v=1),
    "success, result a string": doc(status="SUCCESS", result="done", v=1),
    "success, result empty map": doc(status="SUCCESS", result={}, v=1),
    "success, result a list": doc(status="SUCCESS", result=[1, 2], v=1),
    "failure, exc_type a number": doc(status="FAILURE", result={"exc_type": 5}, v=1),
    "failure, result a list": doc(status="FAILURE", result=["BadInput"], v=1),
    "failure, unknown type": doc(status="FAILURE", result={"exc_type": "ValueError"}, v=1),
    "revoked": doc(status="REVOKED", result=None, v=1),
    "pending": doc(status="PENDING", result=None),
    "status missing": doc(result=GOOD, v=1),
    "status a number": doc(status=1, result=GOOD),
    "a JSON list": b"[1, 2, 3]",
    "a JSON string": b'"SUCCESS"',
    "not JSON": b"\x00\xffgarbage",
}


@pytest.fixture(scope="module")
def r() -> Iterator[redis.Redis]:
    with LocalRedis() as server:
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


def python_says(raw: bytes) -> bool:
    record = StatusRecord.parse(raw)
    return record is not None and record.cacheable


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_lua_and_python_agree_whether_a_record_is_a_cache_hit(r, name):
    raw = RECORDS[name]
    r.set("probe", raw)
    probe = r.register_script(
        lua.source("status_record")
        + "\nreturn status_cacheable(redis.call('GET', KEYS[1]), tonumber(ARGV[1]), cacheable_set(ARGV[2]))"
        + " and 1 or 0"
    )
    lua_says = bool(probe(keys=["probe"], args=[C.WIRE_VERSION, ",".join(cacheable_types())]))
    assert lua_says is python_says(raw), name


def test_the_claim_script_counts_exactly_the_hits_the_client_serves(r):
    """Through the real script: the hit counter equals what the Python reader calls cacheable."""
    r.delete(C.CACHE_STATS_KEY)
    ids = [f"agree-{i}" for i in range(len(RECORDS))]
    for jid, raw in zip(ids, RECORDS.values(), strict=True):
        r.set(result_key(jid), raw)
    codes = Claims(r, 60, 10).check_and_claim(ids, "m:v")
    assert [c[0] for c in codes] == [FOUND] * len(ids)
    hits = int(r.hget(C.CACHE_STATS_KEY, "m:v:hit") or 0)
    assert hits == sum(python_says(raw) for raw in RECORDS.values())
    assert hits >= 5  # the list holds both kinds, or this test proves little


def test_a_claim_written_in_lua_reads_in_python_on_redis_clock(r):
    r.delete(inflight_key("c1"), result_key("c1"))
    assert Claims(r, 60, 10).check_and_claim(["c1"], "m:v") == [[CLAIMED]]
    sec, usec = r.time()
    at = Claim.parse(r.get(inflight_key("c1")))
    assert at is not None and abs(at - (sec + usec / 1e6)) < 5


def test_a_claim_written_in_python_holds_in_lua_until_stale(r):
    claims = Claims(r, 60, stale_after_s=10)
    sec, _ = r.time()
    r.set(inflight_key("c2"), Claim.encode(sec - 1))
    assert claims.check_and_claim(["c2"], "m:v") == [[SHARED]]
    r.set(inflight_key("c2"), Claim.encode(sec - 30))  # older than stale_after_s: taken over
    assert claims.check_and_claim(["c2"], "m:v") == [[CLAIMED]]


@pytest.mark.parametrize("raw", [b"2:1700000000.5", b"junk", b"1:soon"])
def test_a_claim_lua_cannot_read_is_taken_over_and_python_cannot_read_it_either(r, raw):
    r.set(inflight_key("c3"), raw)
    assert Claim.parse(raw) is None
    assert Claims(r, 60, 3600).check_and_claim(["c3"], "m:v") == [[CLAIMED]]
    assert Claim.parse(r.get(inflight_key("c3"))) is not None


def test_a_fresh_claim_from_before_claims_had_a_version_still_holds(r):
    """An older producer's claim (a bare time) is honoured by both readers alike."""
    sec, usec = r.time()
    raw = f"{sec + usec / 1e6 - 1:.6f}".encode()
    r.set(inflight_key("c4"), raw)
    assert Claim.parse(raw) is not None
    assert Claims(r, 60, stale_after_s=10).check_and_claim(["c4"], "m:v") == [[SHARED]]


def test_the_oversized_stub_written_in_lua_reads_in_python(r):
    queue = "inferq.stub.fp32"
    r.delete(*queue_lists(queue), UNACKED, UNACKED_INDEX)
    envelope = {
        "body": "A" * 5000,
        "headers": {"id": "big-job", "task": C.PREDICT_TASK},
        "properties": {"delivery_tag": "tag-1", "delivery_info": {"exchange": queue, "routing_key": queue}},
    }
    raw = orjson.dumps(envelope).replace(b'":', b'": ').replace(b'","', b'", "')
    r.lpush(queue, raw)
    fetch = r.register_script(lua.source("fetch"))
    _, item, tag = fetch(
        keys=[UNACKED, UNACKED_INDEX, HOLDERS, "lead", "wake", "sleepers", *queue_lists(queue)],
        args=[1, 1000, C.WIRE_VERSION, "", "busy", "", 0, 15],
    )[1:]
    stub_envelope = orjson.loads(item)
    assert OversizedStub.from_envelope(stub_envelope) == OversizedStub(len(raw), 1000)
    assert stub_envelope["v"] == C.WIRE_VERSION and stub_envelope["headers"]["id"] == "big-job"
    assert tag == b"tag-1"


REVOCATIONS = {
    "our cancel": (StatusRecord.cancelled("a").encode(), True),
    "celery's json.dumps": (b'{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError"}}', True),
    "leading space": (b'  {  "status" :"REVOKED"}', True),
    "success": (StatusRecord.success("a", GOOD).encode(), False),
    "started": (StatusRecord.started("a").encode(), False),
    "revoked later in the doc": (b'{"task_id": "a", "status": "REVOKED"}', False),
    "garbage": (b"\x00REVOKED", False),
}


@pytest.mark.parametrize("name", sorted(REVOCATIONS))
def test_lua_and_python_agree_on_what_is_a_revocation(r, name):
    from workers.serving.store import _REVOKED

    raw, expected = REVOCATIONS[name]
    r.set("probe", raw)
    probe = r.register_script(
        lua.source("revoked") + "\nreturn is_revoked(redis.call('GETRANGE', KEYS[1], 0, 63)) and 1 or 0"
    )
    assert bool(probe(keys=["probe"])) is expected
    assert bool(_REVOKED.match(raw[:64])) is expected
