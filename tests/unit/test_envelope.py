"""Reading messages off the queue: what is refused, and that refused bodies are never decoded."""

from __future__ import annotations

import base64
import json
import pickle

import msgpack
import pytest

from workers.broker.envelope import Rejected, parse_message


def envelope(
    body: bytes, *, ctype: str = "application/x-msgpack", task: str = "inferq.predict", jid: str = "j1"
) -> bytes:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary",
            "content-type": ctype,
            "headers": {"task": task, "id": jid},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": "t",
                "delivery_info": {"exchange": "", "routing_key": "q"},
            },
        }
    ).encode()


def celery_body(arg: object) -> bytes:
    return msgpack.packb([[arg], {}, {}])


def test_a_job_message_yields_its_id_and_request() -> None:
    assert parse_message(envelope(celery_body({"model": "m"}))) == [("j1", {"model": "m"})]


def test_a_bulk_message_yields_one_job_per_item_with_shared_fields() -> None:
    arg = {
        "model": "m",
        "variant": "v",
        "items": [{"id": "a1", "inputs": b"x"}, {"id": "b2", "inputs_ref": "inferq:input:b2:1"}],
    }
    assert parse_message(envelope(celery_body(arg), jid="bulk-1")) == [
        ("a1", {"model": "m", "variant": "v", "inputs": b"x"}),
        ("b2", {"model": "m", "variant": "v", "inputs_ref": "inferq:input:b2:1"}),
    ]


class Boom:
    def __reduce__(self):  # pragma: no cover - must never run
        return (pytest.fail, ("a pickle body was deserialized",))


@pytest.mark.parametrize(
    "ctype", ["application/x-python-serialize", "application/x-yaml", "text/plain", None]
)
def test_pickle_yaml_and_unknown_content_types_are_refused_unread(ctype: str | None) -> None:
    raw = envelope(pickle.dumps(Boom()), ctype=ctype)  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="is not accepted") as err:
        parse_message(raw)
    assert err.value.job_id == "j1"


def test_unknown_task_name_is_refused_naming_it() -> None:
    with pytest.raises(Rejected, match=r"unknown task 'os\.system'"):
        parse_message(envelope(celery_body({}), task="os.system"))


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"{}"])
def test_messages_that_are_not_celery_protocol_are_refused(raw: bytes) -> None:
    with pytest.raises(Rejected):
        parse_message(raw)


def test_a_body_that_does_not_decode_is_refused_with_its_codec() -> None:
    with pytest.raises(Rejected, match="does not decode as msgpack"):
        parse_message(envelope(b"\xc1\xc1\xc1"))


@pytest.mark.parametrize("items", [[], "x", [{"id": "../etc", "inputs": b""}], [{"inputs": b""}]])
def test_malformed_bulk_items_are_refused(items: object) -> None:
    with pytest.raises(Rejected, match="bulk"):
        parse_message(envelope(celery_body({"model": "m", "items": items}), jid="bulk-2"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'"a string"', "the envelope is a JSON str"),
        (b'{"headers": [1], "properties": {}}', "expected a 'headers' map, got list"),
        (b'{"headers": "x", "properties": {}}', "expected a 'headers' map, got str"),
    ],
)
def test_envelopes_whose_parts_are_not_maps_are_refused_not_crashed_on(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=reason) as err:
        parse_message(raw)
    assert err.value.job_id == ""


def test_properties_that_are_not_a_map_are_refused_under_the_message_id() -> None:
    raw = json.dumps({"headers": {"id": "j9", "task": "inferq.predict"}, "properties": [], "body": ""})
    with pytest.raises(Rejected, match="expected a 'properties' map, got list") as err:
        parse_message(raw.encode())
    assert err.value.job_id == "j9"


@pytest.mark.parametrize("field", ["task", "ctype"])
def test_long_task_names_and_content_types_are_shortened_in_reasons(field: str) -> None:
    long = "x" * 100_000
    raw = envelope(b"", task=long) if field == "task" else envelope(b"", ctype=long)
    with pytest.raises(Rejected) as err:
        parse_message(raw)
    assert "(100000 characters)" in err.value.reason
    assert len(err.value.reason) < 200


def test_a_bulk_item_without_a_usable_id_is_skipped_and_its_siblings_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    arg = {"model": "m", "items": [{"id": "a1", "inputs": b"x"}, {"id": "../etc", "inputs": b"y"}, 7]}
    assert parse_message(envelope(celery_body(arg), jid="bulk-3")) == [("a1", {"model": "m", "inputs": b"x"})]
    assert "rejected item 1 of bulk message 'bulk-3'" in caplog.text
    assert "rejected item 2 of bulk message 'bulk-3'" in caplog.text


def with_expires(raw: bytes, expires: object) -> bytes:
    doc = json.loads(raw)
    doc["headers"]["expires"] = expires
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("expires", "deadline"),
    [
        ("2026-11-28T12:00:00+00:00", 1795867200.0),
        ("2026-11-28T13:00:00+01:00", 1795867200.0),
        ("2026-11-28T12:00:00", 1795867200.0),  # naive: taken as UTC
        (None, None),
        ("not a time", None),
        (12345, None),
    ],
)
def test_celerys_expires_header_becomes_the_jobs_deadline(expires: object, deadline: float | None) -> None:
    [(_, request)] = parse_message(with_expires(envelope(celery_body({"model": "m"})), expires))
    assert request.get("deadline_at") == deadline


def test_a_deadline_in_the_job_itself_wins_over_celerys_expires() -> None:
    raw = with_expires(envelope(celery_body({"model": "m", "deadline_at": 5.0})), "2026-11-28T12:00:00+00:00")
    assert parse_message(raw)[0][1]["deadline_at"] == 5.0
