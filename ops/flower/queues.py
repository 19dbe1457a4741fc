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

import logging
from typing import Any

import redis
from flower.api.tasks import GetQueueLengths
from flower.urls import handlers
from flower.views.broker import BrokerView
from tornado import web
from tornado.ioloop import IOLoop
from tornado.routing import URLSpec

from tasks import constants as C
from tasks.connections import redis_client
from tasks.keys import NAME_RE, queue_name
from tasks.kombu_layout import PRIORITY_SEP
from tasks.settings import Settings

log = logging.getLogger(__name__)

#: Keys fetched per SCAN call: few round trips, each short enough not to stall Redis.
SCAN_COUNT = 1000


def model_queue_of(list_name: str) -> str | None:
    """The model queue (``inferq.<model>.<variant>``) a kombu list belongs to, or None.

    A queue's priority lists (``queue\\x06\\x16N``) map to the queue; other ``inferq.*``
    names (``inferq.default``, a worker's ``inferq.worker.<host>``) are not model queues.
    """
    base = list_name.split(PRIORITY_SEP, 1)[0]
    prefix, _, rest = base.partition(".")
    model, _, variant = rest.partition(".")
    if prefix == C.QUEUE_PREFIX and NAME_RE.fullmatch(model) and NAME_RE.fullmatch(variant):
        return queue_name(model, variant)
    return None


class ModelQueues:
    """Finds the names of all model queues: announced ones and ones holding messages."""

    def __init__(self, broker: redis.Redis[bytes], backend: redis.Redis[bytes]) -> None:
        self.broker = broker
        self.backend = backend

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelQueues:
        return cls(
            redis_client(settings.broker_url, settings), redis_client(settings.result_backend, settings)
        )

    def announced(self) -> set[str]:
        """Queues of the models workers have announced (kept after the workers stop)."""
        out = set()
        for field in self.backend.hkeys(C.MODELS_KEY):
            model, _, variant = field.decode(errors="replace").partition(":")
            if NAME_RE.fullmatch(model) and NAME_RE.fullmatch(variant):
                out.add(queue_name(model, variant))
        return out

    def in_broker(self) -> set[str]:
        """Model queues with messages waiting: kombu deletes a list once it is empty.

        SCAN, not KEYS: it walks the keyspace in small steps, so a broker that shares
        its Redis with a large result cache is never blocked by it.
        """
        out = set()
        for key in self.broker.scan_iter(match=f"{C.QUEUE_PREFIX}.*", count=SCAN_COUNT, _type="list"):
            queue = model_queue_of(key.decode(errors="replace"))
            if queue is not None:
                out.add(queue)
        return out

    def names(self) -> set[str]:
        """Every known model queue; a failed read is logged and the other source kept."""
        out: set[str] = set()
        for source in (self.announced, self.in_broker):
            try:
                out |= source()
            except redis.RedisError as exc:
                log.warning("could not list model queues (%s): %s", source.__name__, exc)
        return out


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
