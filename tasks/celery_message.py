"""A Celery task message, built as kombu's Redis transport stores it, without kombu.

Both clients publish a job with one ``LPUSH`` of this message (plus the inputs stored
beside it) in one pipeline: the sync ``Client`` on redis-py, the ``AsyncClient`` on
``redis.asyncio``. kombu's producer cannot do the second (it blocks the event loop),
and for the first it cost more than Redis and the model together for small jobs
(a publish walks kombu's declare cache, its retry wrapper and a ``json.dumps`` of the
envelope; docs/benchmarks.md).

What is built here is byte for byte the shape kombu 5.x writes for Celery's message
protocol 2 (``celery.app.amqp.as_task_v2`` + ``kombu.transport.virtual.Channel``): the
same fields, in the same order, serialised with ``json.dumps``'s defaults, because the
worker's Lua fetch finds the delivery tag and routing key with a pattern over the
envelope's tail (``tasks/lua/fetch.lua``). ``tests/integration/test_kombu_layout.py``
compares a message built here with one kombu publishes, field by field, so a Celery or
kombu upgrade that changes the form fails a test, not production. A plain Celery worker
can read these messages too (the task is still ``inferq.predict``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import msgpack

from tasks.constants import PREDICT_TASK
from tasks.kombu_layout import list_for

#: Celery's origin header: which process sent the message (``gen<pid>@<host>``).
_HOST = socket.gethostname()


def encode_task_message(
    task_id: str,
    body_arg: dict[str, Any],
    *,
    queue: str,
    priority: int,
    expires_at: float | None = None,
    argsrepr: str = "",
    now: float | None = None,
    reply_to: str = "",
) -> tuple[str, str]:
    """``(list, message)``: the Redis list ``queue``'s messages of ``priority`` live in, and
    the message kombu would push there for ``inferq.predict(body_arg)``.

    The body is msgpack (the app's task serializer); ``expires_at`` (unix time) becomes
    Celery's ``expires`` header and kombu's ``expiration`` property, as ``send_task(...,
    expires=)`` writes them. Results are read by inferq's own listener, so the message
    asks for none (``ignore_result``); ``reply_to`` names the sending client's reply
    channel (``inferq:reply:<client id>``, Celery's standard property, which a Celery
    client sets to its RPC queue), where the worker publishes the job's record with the
    rest of its batch's for that client.
    """
    body = msgpack.packb(
        [[body_arg], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
        use_bin_type=True,
    )
    expires = None
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "argsrepr": argsrepr,
        "kwargsrepr": "{}",
        "delivery_mode": 2,
    }
    if expires_at is not None:
        expires = datetime.fromtimestamp(expires_at, UTC).isoformat()
        left_ms = (expires_at - (now if now is not None else datetime.now(UTC).timestamp())) * 1e3
        properties["expiration"] = str(max(0, int(left_ms)))
    properties["delivery_info"] = {"exchange": "", "routing_key": queue}
    properties["priority"] = priority
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = str(uuid.uuid4())
    # The body comes first, spliced in below: base64 needs no JSON escaping, and letting
    # json.dumps scan a payload's kilobytes for characters to escape was half the cost
    # of building a single job's message.
    message = {
        "content-encoding": "binary",
        "content-type": "application/x-msgpack",
        "headers": {
            "lang": "py",
            "task": PREDICT_TASK,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": expires,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": "{}",
            "origin": f"gen{os.getpid()}@{_HOST}",
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": properties,
    }
    rest = json.dumps(message)  # '{"content-encoding": ...}'
    return list_for(queue, priority), '{"body": "' + base64.b64encode(body).decode("ascii") + '", ' + rest[1:]


_NO_REPLY = '"reply_to": ""'


def with_reply_to(message: str, reply_to: str) -> str:
    """A message ``encode_task_message`` built without ``reply_to``, naming ``reply_to`` now
    (the same bytes as building it with ``reply_to=``; the property sits near the tail,
    after the body, so the search runs from the end)."""
    at = message.rfind(_NO_REPLY)
    if at < 0:
        raise ValueError("not a message of encode_task_message without reply_to")
    return message[:at] + '"reply_to": ' + json.dumps(reply_to) + message[at + len(_NO_REPLY) :]
