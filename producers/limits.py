"""The producer's queue limit: refuse with ``Overloaded`` rather than grow Redis without bound."""

from __future__ import annotations

import time

import redis

from tasks.errors import Overloaded
from tasks.kombu_layout import queue_lists

#: The depth is read from Redis at most this often per queue; between reads the guard
#: counts its own sends, so the limit is soft by what other producers add meanwhile.
REFRESH_S = 0.2


class QueueDepthGuard:
    def __init__(self, broker: redis.Redis[bytes], limit: int) -> None:
        self.broker = broker
        self.limit = limit  # 0: no limit
        self._depths: dict[str, tuple[float, int]] = {}

    def check(self, queue: str, adding: int) -> None:
        """Raise ``Overloaded`` if ``adding`` jobs would take ``queue`` past the limit."""
        if self.limit <= 0:
            return
        seen = self._depths.get(queue)
        now = time.monotonic()
        if seen is None or now - seen[0] > REFRESH_S:
            pipe = self.broker.pipeline(transaction=False)
            for lst in queue_lists(queue):
                pipe.llen(lst)
            seen = (now, int(sum(pipe.execute())))
        if seen[1] + adding > self.limit:
            self._depths[queue] = seen
            raise Overloaded(
                f"queue {queue} holds {seen[1]} jobs; adding {adding} would pass the limit of {self.limit} "
                "(INFERQ_MAX_QUEUE_DEPTH): retry later"
            )
        self._depths[queue] = (seen[0], seen[1] + adding)
