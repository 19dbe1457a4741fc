"""The gateway's HTTP pieces without Redis: keys and owners, Prefer, the body limit, error shapes."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.auth import ANONYMOUS, KeyCheck, owner_of
from gateway.errors import Unauthorized, status_of
from gateway.limits import BodyLimit
from gateway.prefer import applied, preferred_wait
from tasks import errors as E


def test_without_keys_everyone_is_the_anonymous_owner():
    assert KeyCheck([]).owner(None) == ANONYMOUS
    assert KeyCheck([]).owner("Bearer anything") == ANONYMOUS


def test_a_key_owns_as_its_sha256_and_other_keys_own_otherwise():
    check = KeyCheck(["alpha", "beta"])
    assert check.owner("Bearer alpha") == hashlib.sha256(b"alpha").hexdigest() == owner_of("alpha")
    assert check.owner("bearer  beta ") == owner_of("beta") != owner_of("alpha")


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic alpha", "Bearer alph", "Bearer alphaa", "alpha"]
)
def test_missing_or_wrong_keys_are_refused(header):
    with pytest.raises(Unauthorized):
        KeyCheck(["alpha"]).owner(header)


@pytest.mark.parametrize(
    ("values", "cap", "expected"),
    [
        (["wait=5"], 30, 5.0),
        (["respond-async, wait=10"], 30, 10.0),
        (["handling=lenient", "wait=100"], 30, 30.0),
        (['wait="7"'], 30, 7.0),
        (["wait=-1"], 30, None),
        (["wait=soon"], 30, None),
        (["return=minimal"], 30, None),
        ([], 30, None),
        # a superscript (a header byte 0xB2, read as latin-1) is a digit to str.isdigit()
        (["wait=\u00b2"], 30, None),
    ],
)
def test_prefer_wait_is_read_capped_and_malformed_ones_ignored(values, cap, expected):
    assert preferred_wait(values, cap) == expected


def test_preference_applied_names_the_wait():
    assert applied(10.0) == "wait=10"
    assert applied(2.5) == "wait=2.5"


def test_errors_map_to_the_documented_statuses():
    cases = {
        E.BadInput("x"): 400,
        E.PayloadTooLarge("x"): 413,
        E.ModelNotFound("x"): 404,
        E.JobNotFound("x"): 404,
        E.Timeout("x"): 504,
        E.Expired("x"): 504,
        E.BrokerUnavailable("x"): 503,
        E.Overloaded("x"): 503,
        E.TransientError("x"): 503,
        E.JobCancelled("x"): 409,
        E.IncompatibleVersion("x"): 409,
        E.ConfigError("x"): 500,
    }
    assert {type(e).__name__: status_of(e) for e in cases} == {type(e).__name__: s for e, s in cases.items()}


class Recorder:
    """A downstream app that reads the whole body, and what was sent back."""

    def __init__(self) -> None:
        self.read = 0
        self.sent: list[Message] = []

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def run(
    limit: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[Recorder, int, BaseException | None]:
    rec = Recorder()
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        i = pulled - 1
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    error = None
    try:
        asyncio.run(BodyLimit(rec.app, limit)(scope, receive, rec.send))
    except BaseException as exc:
        error = exc
    return rec, pulled, error


def test_a_content_length_over_the_limit_is_answered_413_without_reading():
    rec, pulled, error = run(10, [(b"content-length", b"11")], [b"x" * 11])
    assert error is None and pulled == 0 and rec.read == 0
    start = rec.sent[0]
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]
    assert b'"error"' in rec.sent[1]["body"]


def test_a_body_within_the_limit_passes_untouched():
    rec, _, error = run(10, [(b"content-length", b"10")], [b"x" * 10])
    assert error is None and rec.read == 10 and rec.sent[0]["status"] == 200


def test_a_chunked_body_is_cut_off_once_past_the_limit():
    rec, pulled, error = run(10, [], [b"x" * 6, b"x" * 6, b"x" * 6, b"x" * 6])
    assert isinstance(error, E.PayloadTooLarge)
    assert pulled == 2  # stopped at the chunk that crossed the limit, the rest never pulled
    rec, _, error = run(10, [], [b"x" * 5, b"x" * 5])
    assert error is None and rec.read == 10
