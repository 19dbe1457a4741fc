"""Every wire form round-trips through its one definition, carries a version, and a
reader meets another version with a clear error instead of misreading it."""

from __future__ import annotations

import json
import re

import msgpack
import numpy as np
import orjson
import pytest

from tasks import constants as C
from tasks.codec import encode_inputs
from tasks.errors import BadInput, Expired, IncompatibleVersion, PayloadTooLarge, TransientError
from tasks.schema import JobStatus, ModelInfo, TensorSpec, Timing
from tasks.wire import (
    VERSION,
    BulkItem,
    BulkMessage,
    Claim,
    ModelAnnouncement,
    OversizedStub,
    Request,
    Result,
    StatusRecord,
    WorkerBeat,
)

TIMING = Timing.build(
    enqueued_at=1.0, received_at=1.5, started_at=1.6, compute_done_at=1.65, finished_at=1.7, batch_size=4
)


def a_result(job_id: str = "j1") -> Result:
    return Result(job_id, "digits", "int8", "v7", {"probs": np.arange(10, dtype=np.float32)}, TIMING)


def msgpack_round_trip(obj: dict) -> dict:
    """What a worker gets back after kombu's msgpack serializer."""
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


def test_single_job_message_round_trips_with_its_version():
    payload = encode_inputs({"image": np.ones((2, 2), np.float32)})
    req = Request("digits", "fp32", payload, version="v3", enqueued_at=12.5, cache=False, deadline_at=99.0)
    wire = msgpack_round_trip(req.to_wire())
    assert wire["v"] == VERSION
    assert Request.from_wire(wire) == req


def test_single_job_with_its_input_beside_the_message_round_trips():
    req = Request("digits", "fp32", inputs_ref="inferq:input:abc:1234", version="v3", enqueued_at=1.0)
    wire = msgpack_round_trip(req.to_wire())
    assert "inputs" not in wire
    assert Request.from_wire(wire) == req


def test_bulk_message_round_trips_into_one_request_per_item():
    common = Request("digits", "int8", version="v1", enqueued_at=5.0, deadline_at=6.0)
    items = [BulkItem("a1", inputs=b"\x01\x02"), BulkItem("b2", inputs_ref="inferq:input:b2:x")]
    wire = msgpack_round_trip(BulkMessage(common, items).to_wire())
    assert wire["v"] == VERSION and BulkMessage.is_bulk(wire)
    split, skipped = BulkMessage.split(wire)
    assert skipped == []
    assert [jid for jid, _ in split] == ["a1", "b2"]
    first, second = (Request.from_wire(arg) for _, arg in split)
    assert first == Request("digits", "int8", b"\x01\x02", version="v1", enqueued_at=5.0, deadline_at=6.0)
    assert second.inputs_ref == "inferq:input:b2:x" and second.inputs is None


def test_bulk_items_without_a_usable_id_are_skipped_and_named_by_position():
    wire = BulkMessage(Request("m", "v"), [BulkItem("ok-1", inputs=b"x")]).to_wire()
    wire["items"] = [{"inputs": b"x"}, wire["items"][0], {"id": "a*b", "inputs": b"x"}, "junk"]
    split, skipped = BulkMessage.split(wire)
    assert [jid for jid, _ in split] == ["ok-1"] and skipped == [0, 2, 3]


@pytest.mark.parametrize("v", [0, 2, "1", None])
def test_each_item_of_a_bulk_message_in_another_wire_version_is_refused_alone(v):
    """Each item is answered under its own id (which its waiter watches), never under the
    bulk message's id alone, and not as BadInput: a version mismatch is not cached."""
    bulk = BulkMessage(Request("m", "x"), [BulkItem("a", inputs=b""), BulkItem("b", inputs=b"")]).to_wire()
    split, skipped = BulkMessage.split(bulk | {"v": v})
    assert [jid for jid, _ in split] == ["a", "b"] and skipped == []
    for _, arg in split:
        with pytest.raises(IncompatibleVersion, match=f"job wire version must be {VERSION}, got {v!r}"):
            Request.from_wire(arg)
    assert not IncompatibleVersion.cacheable


def test_stored_result_in_another_version_raises_incompatible_version():
    doc = a_result().to_wire() | {"v": 2}
    with pytest.raises(IncompatibleVersion, match="wire version 2; this client reads version 1"):
        Result.from_wire("j1", doc, cached=False)


def test_status_record_of_a_success_round_trips_to_the_result():
    raw = StatusRecord.success("j1", a_result().to_wire()).encode()
    doc = orjson.loads(raw)
    # Celery's own fields, so AsyncResult can read it; plus our version.
    assert {"status", "result", "traceback", "children", "date_done", "task_id", "v"} <= set(doc)
    rec = StatusRecord.parse(raw, "j1")
    assert rec is not None and rec.ready and rec.cacheable
    assert rec.job_status() is JobStatus.SUCCESS
    np.testing.assert_array_equal(rec.to_result(cached=False).outputs["probs"], np.arange(10))


@pytest.mark.parametrize(
    ("error", "status", "cacheable"),
    [
        (BadInput("shape"), JobStatus.FAILURE, True),
        (PayloadTooLarge("big"), JobStatus.FAILURE, True),
        (TransientError("crash"), JobStatus.FAILURE, False),
        (Expired("late"), JobStatus.EXPIRED, False),
    ],
)
def test_status_record_of_a_failure_round_trips_to_the_same_error(error, status, cacheable):
    raw = StatusRecord.failure("j2", error).encode()
    assert orjson.loads(raw)["result"] == {
        "exc_type": type(error).__name__,
        "exc_message": [error.message],
        "exc_module": "tasks.errors",
    }
    rec = StatusRecord.parse(raw)
    assert rec is not None and rec.job_id == "j2" and rec.ready
    assert rec.cacheable is cacheable and rec.job_status() is status
    with pytest.raises(type(error), match=error.message):
        rec.to_result(cached=False)


def test_started_record_is_running_and_not_ready():
    rec = StatusRecord.parse(StatusRecord.started("j3").encode())
    assert rec is not None and not rec.ready and not rec.cacheable
    assert rec.job_status() is JobStatus.RUNNING


def test_revoked_record_means_expired():
    rec = StatusRecord.parse(orjson.dumps({"status": "REVOKED", "result": None, "task_id": "j4"}))
    assert rec is not None and rec.ready and rec.job_status() is JobStatus.EXPIRED
    with pytest.raises(Expired):
        rec.to_result(cached=False)


def test_status_record_in_another_version_is_reported_not_misread():
    raw = orjson.loads(StatusRecord.success("j5", a_result().to_wire()).encode()) | {"v": 3}
    rec = StatusRecord.parse(orjson.dumps(raw))
    assert rec is not None and rec.ready and not rec.cacheable
    with pytest.raises(IncompatibleVersion, match="wire version 3"):
        rec.to_result(cached=False)


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1, 2]", b'"text"', b'{"status": 5}'])
def test_what_is_not_a_status_record_parses_as_none(raw):
    assert StatusRecord.parse(raw) is None


def test_claim_round_trips_and_refuses_other_versions():
    assert Claim.parse(Claim.encode(1700000000.25)) == pytest.approx(1700000000.25)
    assert Claim.encode(1.0).startswith(f"{VERSION}:")
    for other in (b"2:1700000000.0", b"1:soon", b"soon", None):
        assert Claim.parse(other) is None


def test_a_claim_from_before_claims_had_a_version_reads_as_version_1():
    """A rolling upgrade: a claim an older producer wrote still holds its job."""
    assert Claim.parse(b"1700000000.5") == pytest.approx(1700000000.5)


def test_model_announcement_round_trips_and_skips_other_versions():
    info = ModelInfo(
        name="digits",
        variant="int8",
        version="abc",
        runtime="litert",
        inputs=(TensorSpec("image", (28, 28, 1), "float32", "int8", (0.5, -3)),),
        outputs=(TensorSpec("probs", (10,), "float32", "float32"),),
        labels=tuple("0123456789"),
        max_batch_size=16,
    )
    raw = ModelAnnouncement.encode(info)
    assert orjson.loads(raw)["v"] == VERSION
    assert ModelAnnouncement.parse(raw) == info
    assert ModelAnnouncement.parse(orjson.dumps(orjson.loads(raw) | {"v": 2})) is None
    assert ModelAnnouncement.parse(b"{broken") is None


def test_worker_beat_round_trips_with_its_stats():
    beat = WorkerBeat("w1@h", 42, ("digits:fp32",), 10.0, 20.0, {"succeeded": 7, "recent": {}})
    back = WorkerBeat.parse(beat.encode())
    assert back == beat
    assert back.alive(20.0 + 3 * C.WORKER_HEARTBEAT_S) and not back.alive(21.0 + 3 * C.WORKER_HEARTBEAT_S)
    assert beat.to_dict()["succeeded"] == 7 and "v" not in beat.to_dict()
    assert WorkerBeat.parse(orjson.dumps(orjson.loads(beat.encode()) | {"v": 9})) is None


def test_oversized_stub_is_told_from_a_kombu_envelope():
    assert OversizedStub.from_envelope({"headers": {}, "properties": {}}) is None
    stub = OversizedStub.from_envelope({"v": 1, OversizedStub.MARK: 280_000_000, "inferq_limit": 33554432})
    assert stub == OversizedStub(280_000_000, 33554432)


# --- Request and Result in detail ---------------------------------------------


def wire(**changes):
    d = Request(model="mnist", variant="fp32", inputs=b"blob", version="1", enqueued_at=10.0).to_wire()
    d.update(changes)
    return d


def test_request_round_trips_through_the_wire():
    req = Request(model="mnist", variant="fp32", inputs=b"blob", version="1", enqueued_at=10.0, cache=False)
    w = req.to_wire()
    assert w["v"] == C.WIRE_VERSION
    assert Request.from_wire(w) == req


@pytest.mark.parametrize("obj", [None, [1, 2], "mnist", b"x", 3])
def test_request_from_wire_refuses_non_dicts(obj):
    with pytest.raises(
        BadInput,
        match=rf"job argument must be a map with model, variant and inputs, got {type(obj).__name__}",
    ):
        Request.from_wire(obj)


@pytest.mark.parametrize(
    ("drop", "named"),
    [(("model",), "['model']"), (("inputs",), "['inputs']"), (("model", "variant"), "['model', 'variant']")],
)
def test_request_from_wire_names_missing_fields(drop, named):
    w = wire()
    for k in drop:
        del w[k]
    with pytest.raises(
        BadInput, match=rf"job is missing field\(s\) {re.escape(named)}; expected model, variant and inputs"
    ):
        Request.from_wire(w)


@pytest.mark.parametrize("v", [0, 2, "1", None])
def test_request_from_wire_refuses_another_wire_version(v):
    with pytest.raises(
        IncompatibleVersion, match=rf"job wire version must be {C.WIRE_VERSION}, got {re.escape(repr(v))}"
    ):
        Request.from_wire(wire(v=v))


def test_request_from_wire_accepts_a_missing_wire_version():
    w = wire()
    del w["v"]
    assert Request.from_wire(w).model == "mnist"


@pytest.mark.parametrize("field", ["model", "variant"])
def test_request_from_wire_refuses_non_string_names(field):
    with pytest.raises(BadInput, match=rf"job field '{field}' must be a string, got int"):
        Request.from_wire(wire(**{field: 7}))


def test_request_from_wire_normalizes_optional_fields():
    req = Request.from_wire(wire(version=4, enqueued_at="yesterday"))
    assert req.version == "4"
    assert isinstance(req.enqueued_at, float)
    assert req.enqueued_at > 1e9  # fell back to now
    w = wire()
    del w["version"], w["cache"], w["enqueued_at"]
    req = Request.from_wire(w)
    assert req.version is None
    assert req.cache is True


def make_result() -> Result:
    timing = Timing.build(
        enqueued_at=1.0, received_at=1.1, started_at=1.2, compute_done_at=1.3, finished_at=1.4, batch_size=3
    )
    rng = np.random.default_rng(0)
    return Result(
        job_id="abc123",
        model="mnist",
        variant="fp32",
        version="1",
        outputs={
            "logits": rng.standard_normal(10).astype(np.float32),
            "embedding": rng.standard_normal((2, 3)).astype(np.float32),
        },
        timing=timing,
    )


def test_result_round_trips_through_json_wire_exactly():
    r = make_result()
    doc = json.loads(json.dumps(r.to_wire()))
    assert doc["v"] == C.WIRE_VERSION
    back = Result.from_wire("abc123", doc, cached=True)
    assert (back.job_id, back.model, back.variant, back.version, back.cached) == (
        "abc123",
        "mnist",
        "fp32",
        "1",
        True,
    )
    assert back.timing == r.timing
    assert sorted(back.outputs) == ["embedding", "logits"]
    for name, arr in r.outputs.items():
        assert back.outputs[name].dtype == np.float32
        assert back.outputs[name].shape == arr.shape
        assert back.outputs[name].tobytes() == arr.tobytes()


def test_result_to_json_gives_nested_lists():
    r = make_result()
    doc = r.to_json()
    assert doc["outputs"]["embedding"] == r.outputs["embedding"].tolist()
    assert doc["cached"] is False
    json.dumps(doc)
