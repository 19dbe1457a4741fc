"""The producer's queue limit: refuse with ``Overloaded`` rather than grow Redis without bound."""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio

from tasks.errors import Overloaded
from tasks.kombu_layout import queue_lists

#: The depth is read from Redis at most this often per queue; between reads the guard
#: counts its own sends, so the limit is soft by what other producers add meanwhile.
REFRESH_S = 0.2


class DepthView:
    """The limit's arithmetic, without I/O (both clients share it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self._depths: dict[str, tuple[float, int]] = {}

    def needs_read(self, queue: str) -> bool:
        """Whether the queue's depth must be read from Redis before ``admit``."""
        if self.limit <= 0:
            return False
        seen = self._depths.get(queue)
        return seen is None or time.monotonic() - seen[0] > REFRESH_S

    def read_on(self, pipe: Any, queue: str) -> None:
        for lst in queue_lists(queue):
            pipe.llen(lst)

    def admit(self, queue: str, adding: int, depth_read: list[int] | None = None) -> None:
        """Raise ``Overloaded`` if ``adding`` jobs would take ``queue`` past the limit;
        ``depth_read``: the list lengths just read (when ``needs_read`` said so)."""
        if self.limit <= 0:
            return
        seen = self._depths.get(queue) if depth_read is None else (time.monotonic(), int(sum(depth_read)))
        assert seen is not None, "needs_read said the depth must be read first"
        if seen[1] + adding > self.limit:
            self._depths[queue] = seen
            raise Overloaded(
                f"queue {queue} holds {seen[1]} jobs; adding {adding} would pass the limit of {self.limit} "
                "(INFERQ_MAX_QUEUE_DEPTH): retry later"
            )
        self._depths[queue] = (seen[0], seen[1] + adding)


class QueueDepthGuard(DepthView):
    def __init__(self, broker: redis.Redis[bytes], limit: int) -> None:
        super().__init__(limit)
        self.broker = broker

    def check(self, queue: str, adding: int) -> None:
        """Raise ``Overloaded`` if ``adding`` jobs would take ``queue`` past the limit."""
        depth: list[int] | None = None
        if self.needs_read(queue):
            pipe = self.broker.pipeline(transaction=False)
            self.read_on(pipe, queue)
            depth = pipe.execute()
        self.admit(queue, adding, depth)


class AsyncQueueDepthGuard(DepthView):
    def __init__(self, broker: redis.asyncio.Redis[bytes], limit: int) -> None:
        super().__init__(limit)
        self.broker = broker

    async def check(self, queue: str, adding: int) -> None:
        depth: list[int] | None = None
        if self.needs_read(queue):
            pipe = self.broker.pipeline(transaction=False)
            self.read_on(pipe, queue)
            depth = await pipe.execute()
        self.admit(queue, adding, depth)
