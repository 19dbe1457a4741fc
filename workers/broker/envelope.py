"""Reading a kombu message off a queue list: envelope, task name, body codec, bulk items.

What comes off the wire is untrusted: anything that is not a Celery message for our
task, in an accepted codec, is refused with a reason (and answered under its id when
it has one). Pickle and YAML bodies are refused unread: their bytes are never decoded.
Reasons name fields, types and sizes, never the body, and quote sender-chosen strings
(task name, content type) only shortened, since they end up in the worker's log.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

import msgpack
import orjson

from tasks.codec import quote
from tasks.constants import PREDICT_TASK, REPLY_CHANNEL_PREFIX
from tasks.errors import BadInput, PayloadTooLarge
from tasks.wire import BulkMessage, BulkTensor, OversizedStub

log = logging.getLogger(__name__)

#: Body codecs accepted off the wire (Celery content types).
ACCEPTED = {"application/x-msgpack": "msgpack", "application/json": "json"}


class Rejected(Exception):
    """A message that is not a job we can run; ``job_id`` is empty when it has none.
    ``error`` is the error type its job is answered with."""

    def __init__(self, job_id: str, reason: str, error: type[BadInput] = BadInput) -> None:
        super().__init__(reason)
        self.job_id = job_id
        self.reason = reason
        self.error = error
        #: The sender's reply channel, when the envelope named one (``read_message``).
        self.reply_to: str | None = None


def parse_message(raw: bytes) -> list[tuple[str, Any]] | BulkTensor:
    """A kombu message as ``[(job id, request)...]`` (one, or a bulk message's items), or
    a ``BulkTensor`` (many jobs whose inputs are stacked)."""
    return read_message(raw)[0]


def read_message(raw: bytes) -> tuple[list[tuple[str, Any]] | BulkTensor, str | None]:
    """``parse_message``'s jobs, and the reply channel the sender named (``reply_to``), if
    it is an inferq one: ``inferq:reply:...``. Anything else (a plain Celery client's
    RPC queue, an empty string) is None. A ``Rejected`` carries it too."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Rejected("", "not a Celery message (the envelope is not JSON)") from None
    if not isinstance(envelope, dict):
        raise Rejected("", f"not a Celery message (the envelope is a JSON {type(envelope).__name__})")
    headers = envelope.get("headers")
    if not isinstance(headers, dict):
        got = "none" if headers is None else type(headers).__name__
        raise Rejected("", f"not a Celery message (expected a 'headers' map, got {got})")
    job_id = headers.get("id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 128:
        job_id = ""  # cannot be answered under an id; the rejection is logged
    props = envelope.get("properties")
    reply_to = _reply_channel(props.get("reply_to")) if isinstance(props, dict) else None
    stub = OversizedStub.from_envelope(envelope)
    if stub is not None:  # the fetcher's stand-in for a message it would not hand over
        rej = Rejected(
            job_id,
            f"message is {_int(stub.size)} bytes, over the worker's limit of {_int(stub.limit)} "
            "bytes (INFERQ_MAX_MESSAGE_BYTES); send big inputs beside the message, as inferq's client does",
            PayloadTooLarge,
        )
        rej.reply_to = reply_to
        raise rej
    if not isinstance(props, dict):
        raise Rejected(
            job_id, f"not a Celery message (expected a 'properties' map, got {type(props).__name__})"
        )
    try:
        return _read_jobs(envelope, headers, props, job_id), reply_to
    except Rejected as rej:
        rej.reply_to = reply_to
        raise


def _reply_channel(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(REPLY_CHANNEL_PREFIX) and 0 < len(value) <= 128:
        return value
    return None


def _read_jobs(
    envelope: dict[str, Any], headers: dict[str, Any], props: dict[str, Any], job_id: str
) -> list[tuple[str, Any]] | BulkTensor:
    task = headers.get("task")
    if task != PREDICT_TASK:
        raise Rejected(job_id, f"unknown task {quote(task)}: this queue only runs {PREDICT_TASK!r}")
    if headers.get("eta") is not None:
        # A job runs as soon as a worker takes it in; holding it until its ``eta`` would hold
        # a batch slot (and the queue behind it) for that long. Refused, never silently run early.
        raise Rejected(
            job_id,
            f"the message has Celery's eta {quote(headers.get('eta'))} (send_task's eta or countdown): "
            f"{PREDICT_TASK} jobs run as soon as a worker takes them and cannot be scheduled; send "
            "the job when it should run (expires= / deadline_ms bound how late it may run)",
        )
    ctype = envelope.get("content-type")
    codec = ACCEPTED.get(ctype) if isinstance(ctype, str) else None
    if codec is None:
        raise Rejected(
            job_id, f"content type {quote(ctype)} is not accepted (expected one of {sorted(ACCEPTED)})"
        )
    try:
        body = envelope["body"]
        if props.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = msgpack.unpackb(body, raw=False) if codec == "msgpack" else json.loads(body)
        args = decoded[0]
    except Exception as exc:
        raise Rejected(job_id, f"message body does not decode as {codec} ({type(exc).__name__})") from None
    arg = args[0] if isinstance(args, (list, tuple)) and len(args) == 1 else args
    expires = _expires_at(headers.get("expires"))
    if expires is not None and isinstance(arg, dict) and arg.get("deadline_at") is None:
        arg["deadline_at"] = expires  # Celery's own per-task deadline, from any Celery client
    if BulkTensor.is_tensor_bulk(arg):
        return _tensor_bulk(job_id, arg)
    if BulkMessage.is_bulk(arg):
        return _split_bulk(job_id, arg)
    if not job_id:
        raise Rejected("", "message has no task id")
    return [(job_id, arg)]


def _int(v: int) -> str:
    return str(v) if v >= 0 else "?"


def _expires_at(value: Any) -> float | None:
    """Celery's ``expires`` header (an ISO 8601 time) as a unix time; None if absent or odd."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:  # Celery writes aware times; a naive one is taken as UTC
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _split_bulk(msg_id: str, arg: dict[str, Any]) -> list[tuple[str, Any]]:
    """A bulk message's items (``tasks/wire/``'s ``BulkMessage``); items without a
    usable id are logged and skipped, so they cannot keep their siblings from running."""
    try:
        items, skipped = BulkMessage.split(arg)
    except BadInput as exc:
        raise Rejected(msg_id, exc.message) from None
    for i in skipped:
        log.warning("rejected item %d of bulk message %s: it has no usable 'id'", i, quote(msg_id))
    return items


def _tensor_bulk(msg_id: str, arg: dict[str, Any]) -> BulkTensor:
    """A ``BulkTensor`` message; items without a usable id are logged and skipped."""
    try:
        bulk, skipped = BulkTensor.from_wire(arg)
    except BadInput as exc:
        raise Rejected(msg_id, exc.message) from None
    for i in skipped:
        log.warning("rejected item %d of bulk message %s: it has no usable 'id'", i, quote(msg_id))
    return bulk
