"""Raw kombu messages, built by hand the way kombu's Redis transport LPUSHes them.

Integration tests use them to put anything on a queue: a job no client would send, a
message in a refused codec, or bytes that are no message at all.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable

import msgpack

from tasks.constants import PREDICT_TASK
from tasks.keys import queue_name

QUEUE = queue_name("digits", "fp32")
MSGPACK, JSON = "application/x-msgpack", "application/json"
PICKLE, YAML = "application/x-python-serialize", "application/x-yaml"


def kombu_message(body: bytes, ctype: str, *, job_id: str | None, task: str = PREDICT_TASK) -> bytes:
    """A message as kombu's Redis transport stores it (Celery protocol 2 headers)."""
    headers: dict[str, object] = {"lang": "py", "task": task, "retries": 0, "argsrepr": "()"}
    if job_id is not None:
        headers |= {"id": job_id, "root_id": job_id}
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary" if ctype == MSGPACK else "utf-8",
            "content-type": ctype,
            "headers": headers,
            "properties": {
                "correlation_id": job_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def job_message(arg: object, *, job_id: str | None, ctype: str = MSGPACK, task: str = PREDICT_TASK) -> bytes:
    """A Celery task message whose body is ``(args=[arg], kwargs={}, embed)``."""
    celery_body = [[arg], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    body = msgpack.packb(celery_body) if ctype == MSGPACK else json.dumps(celery_body).encode()
    return kombu_message(body, ctype, job_id=job_id, task=task)


def request(inputs: object, **over: object) -> dict[str, object]:
    """The ``inferq.predict`` argument for digits fp32, with fields overridden."""
    return {"v": 1, "model": "digits", "variant": "fp32", "inputs": inputs, "enqueued_at": time.time()} | over


def tagged(dtype: str, shape: list[int], data: bytes) -> bytes:
    """Msgpack inputs declaring one ``image`` array, whatever its bytes."""
    return msgpack.packb({"image": {"dtype": dtype, "shape": shape, "data": data}})


class RunsCode:
    """Unpickling this runs a shell command (``pickle.dumps`` only records the call)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (self.command,))
