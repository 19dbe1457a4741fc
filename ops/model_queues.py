"""The model queues (``inferq.<model>.<variant>``) that exist, served or not.

A queue is known from two places: the models workers have announced (``inferq:models``
in the result backend, kept after the workers stop) and the queue lists in the broker
(kombu deletes a list once it is empty, so a list that exists holds jobs). Workers'
heartbeats only name the queues someone serves now, which hides exactly the queues
whose depth matters most: jobs for a variant nobody serves. ``inferq status`` and
Flower's broker page (``ops/flower/queues.py``) list both.
"""

from __future__ import annotations

import logging

import redis

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


def model_key_of(queue: str) -> str:
    """``model:variant`` of a model queue's name (``inferq.<model>.<variant>``)."""
    _, model, variant = queue.split(".", 2)
    return f"{model}:{variant}"
