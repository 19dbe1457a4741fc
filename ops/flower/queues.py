"""Flower's broker page and queue-length API, extended to every model queue.

Flower names the queues to measure from its workers' ``active_queues`` replies (and,
only when no worker answers, from the app's configured queues). A model queue that
no running worker serves, say jobs for ``digits:int8`` while only a ``digits:fp32``
worker runs, or any queue once every worker stopped, would not be listed, although
that is the queue whose depth matters most. So ``inferq flower`` adds the queues of
every announced model (``inferq:models`` in the result backend, which outlives the
workers) and of every model-queue list that exists in the broker.

Depths are still measured by Flower's own Redis helper, which sums a queue's
priority lists with the ``priority_steps`` and ``sep`` from the app's broker
transport options; ``tasks/app.py`` sets those from ``tasks/constants.py``, so
Flower counts exactly the lists kombu and the worker's fetcher use.
"""

from __future__ import annotations

from typing import Any

from flower.api.tasks import GetQueueLengths
from flower.urls import handlers
from flower.views.broker import BrokerView
from tornado import web
from tornado.ioloop import IOLoop
from tornado.routing import URLSpec

from ops.model_queues import ModelQueues
from tasks.settings import Settings


class _WithModelQueues:
    """Adds the model queues to the names Flower measures (``get_active_queue_names``)."""

    def initialize(self, model_queues: ModelQueues) -> None:
        self._model_queues = model_queues
        self._found: set[str] = set()

    async def find_model_queues(self) -> None:
        # Redis calls block: run them on Flower's executor, not its event loop.
        self._found = await IOLoop.current().run_in_executor(None, self._model_queues.names)

    def get_active_queue_names(self) -> list[str]:
        flowers: list[str] = super().get_active_queue_names()  # type: ignore[misc]
        return sorted(set(flowers) | self._found)


class ModelQueuesBrokerView(_WithModelQueues, BrokerView):  # type: ignore[misc]
    """``/broker``: every model queue with its depth, served or not."""

    @web.authenticated
    async def get(self) -> None:
        await self.find_model_queues()
        await super().get()


class ModelQueuesLengths(_WithModelQueues, GetQueueLengths):  # type: ignore[misc]
    """``/api/queues/length``: the same queues as the broker page, as JSON."""

    @web.authenticated
    async def get(self) -> None:
        await self.find_model_queues()
        await super().get()


def install(settings: Settings) -> None:
    """Put our broker page and queue-length API into Flower's URL table.

    Flower builds its application from the module-level list ``flower.urls.handlers``,
    so this must run before Flower starts, in the process that runs it.
    """
    replace: dict[type[Any], type[Any]] = {
        BrokerView: ModelQueuesBrokerView,
        GetQueueLengths: ModelQueuesLengths,
    }
    kwargs = {"model_queues": ModelQueues.from_settings(settings)}
    for i, spec in enumerate(handlers):
        pattern, cls = (spec.regex.pattern, spec.handler_class) if isinstance(spec, URLSpec) else spec[:2]
        if cls in replace:
            name = spec.name if isinstance(spec, URLSpec) else None
            handlers[i] = web.url(pattern, replace[cls], kwargs, name=name)
