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

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks import constants as C
from tasks.celery_message import encode_task_message
from tasks.codec import encode_array
from tasks.keys import input_key, queue_name
from tasks.schema import ModelInfo
from tasks.settings import Settings
from tasks.wire import BulkItem, BulkMessage, BulkTensor, Request


@dataclass
class Outgoing:
    """One message ready to send: the inputs stored beside it, its list and its JSON."""

    task_id: str
    list_key: str
    message: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    blob_ttl_s: int = 0
    #: Further ``(list, message)`` pairs of the same send (a chunk too big for one message).
    more: list[tuple[str, str]] = field(default_factory=list)

    def queue_on(self, pipe: Any) -> None:
        """Queue the writes on a (sync or asyncio) redis-py pipeline: blobs first, so a
        worker that takes the message at once finds them."""
        for ref, payload in self.blobs.items():
            pipe.set(ref, payload, ex=self.blob_ttl_s)
        pipe.lpush(self.list_key, self.message)
        for list_key, message in self.more:
            pipe.lpush(list_key, message)


def _common(info: ModelInfo, t0: float, cache: bool, deadline_at: float | None) -> Request:
    return Request(
        model=info.name,
        variant=info.variant,
        version=info.version,
        enqueued_at=t0,
        cache=cache,
        deadline_at=deadline_at,
    )


def build_tensor_message(
    settings: Settings,
    info: ModelInfo,
    ids: list[str],
    arrays: dict[str, np.ndarray],
    t0: float,
    *,
    cache: bool,
    deadline_at: float | None = None,
    priority: str = C.DEFAULT_PRIORITY,
) -> Outgoing:
    """Many jobs as ``BulkTensor`` messages: their inputs stacked, one array per input name
    (row ``i`` for ``ids[i]``), raw bytes instead of one msgpack map per input.

    The tensors travel inline up to ``INLINE_INPUT_MAX_BYTES``, else beside the message,
    a key per input name holding its raw bytes (never base64 in kombu's JSON, nor
    through msgpack, which took a millisecond to copy 800 KB); a message's tensors stay
    within half the workers' ``INFERQ_MAX_MESSAGE_BYTES`` (more messages if need be).
    """
    common = _common(info, t0, cache, deadline_at)
    row_bytes = sum(a[0].nbytes for a in arrays.values())
    per_message = max(1, settings.max_message_bytes // 2 // max(1, row_bytes))
    out: Outgoing | None = None
    for start in range(0, len(ids), per_message):
        part = {k: v[start : start + per_message] for k, v in arrays.items()}
        part_ids = ids[start : start + per_message]
        bulk = BulkTensor(common, part_ids)
        blobs: dict[str, bytes] = {}
        # Not uuid4: os.urandom lets go of the GIL, and getting it back behind the
        # client's busy listener thread cost a millisecond a call.
        nonce = f"{random.getrandbits(128):032x}"
        bulk.tensors = {k: encode_array(v) for k, v in part.items()}
        if row_bytes * len(part_ids) > C.INLINE_INPUT_MAX_BYTES:
            for i, tensor in enumerate(bulk.tensors.values()):
                ref = input_key(part_ids[0], f"{nonce[:8]}-{i}")
                blobs[ref] = tensor.pop("data")
                tensor["ref"] = ref
        task_id = "bulk-" + nonce
        list_key, message = encode_task_message(
            task_id,
            bulk.to_wire(),
            queue=queue_name(info.name, info.variant),
            priority=C.PRIORITIES[priority],
            expires_at=deadline_at,
            argsrepr=f"({info.key!r}, {len(part_ids)} input(s))",
            now=t0,
        )
        if out is None:
            out = Outgoing(task_id, list_key, message, blobs, settings.cache_ttl_s)
        else:
            out.blobs.update(blobs)
            out.more.append((list_key, message))
    assert out is not None
    return out


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
    common = _common(info, t0, cache, deadline_at)
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
