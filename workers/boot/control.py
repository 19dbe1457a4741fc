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

from celery.worker.control import inspect_command
from kombu.entity import Exchange, Queue


def model_queue(name: str) -> Queue:
    """The queue as Celery declares it for ``send_task(..., queue=name)``: a direct
    exchange of the same name, routed by the queue's name."""
    exchange = Exchange(name, type="direct")  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name)  # type: ignore[no-untyped-call]


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
