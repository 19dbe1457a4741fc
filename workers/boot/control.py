"""Remote control that tells the truth about which queues an inferq worker serves.

Celery answers ``inspect active_queues`` with the queues of its own task consumer,
which in an inferq worker reads only the worker's private control queue
(``inferq.worker.<hostname>``): the model queues are read by our fetcher
(``workers/broker/fetcher.py``), which Celery does not know of. Flower's broker page and
``celery inspect active_queues`` take their queue names from this reply, so without
the override a served model queue looked unserved.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from celery.worker.control import control_command, inspect_command
from kombu.entity import Exchange, Queue

from tasks import lua
from tasks.keys import check_job_id, inflight_key, result_key
from tasks.wire import StatusRecord


def model_queue(name: str) -> Queue:
    """The queue as Celery declares it for ``send_task(..., queue=name)``: a direct
    exchange of the same name, routed by the queue's name."""
    exchange = Exchange(name, type="direct")  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name)  # type: ignore[no-untyped-call]


def handle_revoke(backend: redis.Redis[bytes], ttl_s: int) -> None:
    """Make Celery's ``revoke`` (``celery -A tasks.celery_app control revoke ID``, Flower's
    button) cancel an inferq job the way ``Client.cancel`` does.

    Celery's own revoke only adds the id to each worker's in-memory list, which Celery's
    consumer checks; inferq's fetcher, not that consumer, runs the model queues, so the
    job would run anyway. This handler writes the cancelled record instead (the same Lua
    as the client: a running or finished job is left alone), so every worker skips the
    job and its status reads ``cancelled``. ``terminate`` is not supported: a batch is
    never interrupted. Call it once, before the worker starts.
    """
    cancel = backend.register_script(lua.source("revoked", "cancel"))

    @control_command(  # type: ignore[untyped-decorator]
        variadic="task_id", signature="[id1 [id2 [... [idN]]]]", name="revoke"
    )
    def revoke(
        state: Any, task_id: Any, terminate: bool = False, signal: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Cancel inferq jobs by id (queued ones only; running or finished ones are left alone)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id or [])
        outcomes: dict[str, str] = {}
        for jid in ids:
            try:
                check_job_id(jid)
                got = cancel(
                    keys=[result_key(jid), inflight_key(jid)],
                    args=[StatusRecord.cancelled(jid).encode(), ttl_s],
                )
                outcomes[jid] = got.decode() if isinstance(got, bytes) else str(got)
            except Exception as exc:  # a bad id or Redis away: say so, never crash the worker
                outcomes[jid] = f"not cancelled: {exc}"
        note = " (terminate is not supported: a running batch is never interrupted)" if terminate else ""
        return {"ok": f"inferq: {outcomes}{note}"}


def report_model_queues(queues: Iterable[str]) -> None:
    """Make this process's ``active_queues`` command list ``queues`` too.

    Celery's remote-control commands live in one registry per process (``Panel``);
    registering under the same name replaces its ``active_queues``. Call it once,
    before the worker starts, in the process that runs it.
    """
    served = [model_queue(q) for q in sorted(set(queues))]

    @inspect_command(name="active_queues")  # type: ignore[untyped-decorator]
    def active_queues(state: Any) -> list[dict[str, Any]]:
        """List the queues this worker consumes: its control queue and its model queues."""
        consumer = state.consumer.task_consumer
        own = list(consumer.queues) if consumer else []
        names = {q.name for q in own}
        return [dict(q.as_dict(recurse=True)) for q in [*own, *(q for q in served if q.name not in names)]]
