"""Every form that crosses Redis, defined once: producers and workers build and parse here.

``jobs.py`` (producer -> worker), ``results.py`` (worker -> producer: a job's record),
``replies.py`` (worker -> one producer: a batch's records on its reply channel), ``control.py``
(claims, announcements, heartbeats, the oversized stub), ``version.py``.

| form | written by | read by | where it lives |
|---|---|---|---|
| ``Request``: one job | client (or any Celery client) | worker | a kombu message's task argument |
| ``BulkMessage``: many jobs | client | worker | one kombu message, ``items`` |
| ``BulkTensor``: many jobs, inputs stacked (v2) | client | worker | one kombu message, ``items`` + ``tensors`` |
| ``Result``: a computed result | worker | client | inside a ``StatusRecord`` (SUCCESS) |
| ``StatusRecord``: a job's state | worker | client, Lua ``status_record.lua`` | ``celery-task-meta-<id>`` |
| ``ReplyBatch``: a batch's records for one client (v1), or its successes as columns, ``ReplyBlock``s (v2) | worker (Lua ``store.lua``; v2 packed by ``encode_columns``, ``replies.py``) | client | the client's reply channel |
| ``Claim``: "queued by someone" | client (Lua) | client (Lua) | ``inferq:inflight:<id>`` |
| ``ModelAnnouncement``: a served model | worker | client, ``inferq status``, Flower | ``inferq:models`` hash |
| ``WorkerBeat``: a live worker | worker | ``inferq status``, tools | ``inferq:workers`` hash |
| ``OversizedStub``: a message too big to read | worker (Lua ``fetch.lua``) | worker | in place of the message |

Each carries a version (``v``). A reader that meets a version it does not know says so
(``BadInput`` for a job, ``IncompatibleVersion`` for a stored record) instead of
misreading it; a form without ``v`` is version 1 (what a plain Celery client sends,
and what inferq wrote before the field existed). The status record is Celery's own
result document (so ``AsyncResult`` reads it) plus ``v``.
"""

from tasks.wire.control import Claim, ModelAnnouncement, OversizedStub, WorkerBeat
from tasks.wire.jobs import TENSOR_VERSION, BulkItem, BulkMessage, BulkTensor, Request, is_item_id
from tasks.wire.replies import (
    REPLY_COLUMNS_VERSION,
    REPLY_VERSION,
    ReplyBatch,
    ReplyBlock,
    encode_columns,
    reads_columns,
)
from tasks.wire.results import READY_STATES, Result, StatusRecord, encode_successes
from tasks.wire.version import VERSION

__all__ = [
    "READY_STATES",
    "REPLY_COLUMNS_VERSION",
    "REPLY_VERSION",
    "TENSOR_VERSION",
    "VERSION",
    "BulkItem",
    "BulkMessage",
    "BulkTensor",
    "Claim",
    "ModelAnnouncement",
    "OversizedStub",
    "ReplyBatch",
    "ReplyBlock",
    "Request",
    "Result",
    "StatusRecord",
    "WorkerBeat",
    "encode_columns",
    "encode_successes",
    "is_item_id",
    "reads_columns",
]
