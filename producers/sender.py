"""The job message a submission sends: built without I/O, queued on a Redis pipeline.

Both clients send a chunk of jobs the same way: the inputs too big to travel inline
are stored beside the message (claim check), and the message is pushed onto its queue
list, all in one pipeline (one round trip). Building it is pure; the caller executes
the pipeline (``pipe.execute()`` in the sync ``Client``, ``await pipe.execute()`` in
the ``AsyncClient``); redis-py buffers pipeline commands the same way in both.

The message is Celery's own (``tasks/celery_message.py``), pushed where kombu would
push it, so Celery tools, Flower's queue depths and kombu's own sweep read it as theirs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tasks import constants as C
from tasks.celery_message import encode_task_message
from tasks.keys import input_key, queue_name
from tasks.schema import ModelInfo
from tasks.settings import Settings
from tasks.wire import BulkItem, BulkMessage, Request


@dataclass
class Outgoing:
    """One message ready to send: the inputs stored beside it, its list and its JSON."""

    task_id: str
    list_key: str
    message: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    blob_ttl_s: int = 0

    def queue_on(self, pipe: Any) -> None:
        """Queue the writes on a (sync or asyncio) redis-py pipeline: blobs first, so a
        worker that takes the message at once finds them."""
        for ref, payload in self.blobs.items():
            pipe.set(ref, payload, ex=self.blob_ttl_s)
        pipe.lpush(self.list_key, self.message)


def build_message(
    settings: Settings,
    info: ModelInfo,
    items: list[tuple[str, bytes]],
    t0: float,
    *,
    cache: bool,
    deadline_at: float | None = None,
    priority: str = C.DEFAULT_PRIORITY,
) -> Outgoing:
    """One message: a single job under its own id, or a bulk message of many.

    Inputs over ``INLINE_INPUT_MAX_BYTES`` travel beside the message (claim check):
    a kombu message is JSON with a base64 body, which would make a 600 KB image
    cost 800 KB of base64 to encode, parse, copy into kombu's unacked index and
    decode again. The blob is stored in the broker's Redis first, then the message
    names it; the worker deletes it once the job's result is stored.
    """
    common = Request(
        model=info.name,
        variant=info.variant,
        version=info.version,
        enqueued_at=t0,
        cache=cache,
        deadline_at=deadline_at,
    )
    blobs: dict[str, bytes] = {}
    entries: list[BulkItem] = []
    # Inline inputs travel as base64 inside kombu's JSON: keep a bulk message well
    # under the workers' INFERQ_MAX_MESSAGE_BYTES, or they would answer it
    # PayloadTooLarge unread; past this budget inputs go beside the message.
    inline_left = settings.max_message_bytes // 2
    for jid, payload in items:
        if len(payload) > min(C.INLINE_INPUT_MAX_BYTES, inline_left):
            ref = input_key(jid, uuid.uuid4().hex[:8])
            blobs[ref] = payload
            entries.append(BulkItem(jid, inputs_ref=ref))
        else:
            entries.append(BulkItem(jid, inputs=payload))
            inline_left -= len(payload)
    body: dict[str, Any]
    if len(entries) == 1:
        task_id = entries[0].id
        common.inputs, common.inputs_ref = entries[0].inputs, entries[0].inputs_ref
        body = common.to_wire()
    else:
        body = BulkMessage(common, entries).to_wire()
        task_id = "bulk-" + uuid.uuid4().hex
    list_key, message = encode_task_message(
        task_id,
        body,
        queue=queue_name(info.name, info.variant),
        priority=C.PRIORITIES[priority],
        # Celery's own deadline header too, so Celery tools see it (workers read either).
        expires_at=deadline_at,
        # Celery logs and shows a task's args; never the input payload.
        argsrepr=f"({info.key!r}, {len(entries)} input(s))",
        now=t0,
    )
    return Outgoing(task_id, list_key, message, blobs, settings.cache_ttl_s)
