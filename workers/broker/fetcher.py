"""Pull job messages from the Redis broker many at a time, with kombu's redelivery book-keeping.

kombu's Redis transport moves one message per ``BRPOP`` and one more round trip per
ack; for small models that per-message cost, not the model, sets a worker's
throughput (about 300-400 plain Celery tasks/s per process on our machines). The
fetcher instead takes up to ``n`` messages in one Lua call that also records each in
kombu's ``unacked`` hash and ``unacked_index`` sorted set, exactly as kombu's
``QoS.append`` would. So the guarantees stay kombu's: a message is removed from
those indices only when acked (after its result is stored); while this worker lives
it renews a lease on every message it holds, and once it stops renewing (killed, or
cut off) any inferq worker takes the message back after the visibility timeout
(``workers/broker/leases.py``); and on a graceful stop the fetcher puts back what it has not
run.

Every message leaves its list inside that Lua call, atomically with its record: there
is no moment at which a kombu message (one with a delivery tag) is out of Redis's lists
but not yet recorded (kombu's ``BRPOP`` has one, and a worker killed in it loses the
message). An idle worker waits on a ``Doorbell`` (``workers/broker/doorbell.py``), which
blocks without taking anything.

A message over ``max_message_bytes`` never reaches the worker: the Lua call replaces
it with a small stub naming its task id and size (in the worker and in ``unacked``;
the original is dropped), which the worker answers with ``PayloadTooLarge``. So one
oversized message from a plain Celery client costs the worker nothing, however big.
A bulk message is answered under its message id only (inferq's client keeps its own
bulk messages under the limit).

Messages are taken from the queue's priority lists in kombu's order (``queue``, then
``queue\\x06\\x163``, ``\\x06\\x166``, ``\\x06\\x169``), so priorities work as they do
for Celery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from tasks import lua
from tasks.constants import DEFAULT_MAX_MESSAGE_BYTES, WIRE_VERSION
from tasks.kombu_layout import UNACKED, UNACKED_INDEX, queue_lists
from workers.broker.doorbell import Doorbell
from workers.broker.leases import Leases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One message taken from a queue list; ``tag`` is empty for a message that isn't kombu's."""

    list_key: str
    raw: bytes
    tag: str
    received_at: float


class Fetcher(threading.Thread):
    """Feeds ``on_deliveries`` with up to ``capacity`` unacknowledged messages at a time."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        queues: list[str],
        on_deliveries: Callable[[list[Delivery]], None],
        *,
        capacity: int,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        leases: Leases | None = None,
        idle_block_s: float = 1.0,
    ) -> None:
        super().__init__(name="inferq-fetcher", daemon=True)
        self.client = client
        # Per priority step, the lists of every queue: [[q1, q2], [q1\x06\x163, ...], ...].
        self._steps = [list(step) for step in zip(*(queue_lists(q) for q in queues), strict=True)]
        self._turn = 0
        self.on_deliveries = on_deliveries
        self.capacity = capacity
        self.max_message_bytes = max_message_bytes
        self.leases = leases
        self.idle_block_s = idle_block_s
        self._fetch = client.register_script(lua.source("fetch"))
        self.doorbell = Doorbell(client, [lst for step in self._steps for lst in step])
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._backoff = 0.0

    # --- called by the batcher thread -----------------------------------------------

    def ack(self, deliveries: list[Delivery], input_keys: list[str] | None = None) -> None:
        """Forget delivered messages (their results are stored) and their inputs: one round trip."""
        tags = [d.tag for d in deliveries if d.tag]
        if tags or input_keys:
            # One transaction: a worker killed mid-ack must not leave a hash entry
            # without its index entry (nothing would ever sweep it).
            pipe = self.client.pipeline(transaction=True)
            if tags:
                pipe.zrem(UNACKED_INDEX, *tags)
                pipe.hdel(UNACKED, *tags)
            if input_keys:
                pipe.delete(*input_keys)
            pipe.execute()
        self._release(deliveries)

    def abandon(self, deliveries: list[Delivery]) -> None:
        """Give messages up without acknowledging them (their result could not be stored):
        the lease lapses, and a worker takes them back after the visibility timeout."""
        self._release(deliveries)

    def restore(self, deliveries: list[Delivery]) -> None:
        """Put messages back at the head of their lists (graceful stop), atomically per batch."""
        if deliveries:
            pipe = self.client.pipeline(transaction=True)
            for d in deliveries:
                pipe.rpush(d.list_key, d.raw)  # kombu pops from the right: this is next
                if d.tag:
                    pipe.zrem(UNACKED_INDEX, d.tag)
                    pipe.hdel(UNACKED, d.tag)
            pipe.execute()
        self._release(deliveries)

    def _release(self, deliveries: list[Delivery]) -> None:
        if self.leases is not None:
            self.leases.release(d.tag for d in deliveries)
        with self._cond:
            self._in_flight -= len(deliveries)
            self._cond.notify()

    def start(self) -> None:
        if self.leases is not None and not self.leases.is_alive():
            self.leases.start()
        self.doorbell.start()
        super().start()

    def stop(self) -> None:
        """Stop taking messages; leases are kept up until ``stop_leases`` (a stopping worker
        still stores and acks the batch in hand)."""
        self._stopping.set()
        self.doorbell.stop()
        with self._cond:
            self._cond.notify()

    def stop_leases(self) -> None:
        if self.leases is not None:
            self.leases.stop()

    # --- the fetch loop -------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                while self._in_flight >= self.capacity and not self._stopping.is_set():
                    self._cond.wait(0.5)
                room = self.capacity - self._in_flight
            if self._stopping.is_set():
                break
            try:
                got = self._take(room)
            except Exception as exc:
                # Broker away: back off and retry; nothing is lost (the Lua call is atomic).
                self._backoff = min(5.0, max(0.1, self._backoff * 2))
                log.warning("fetch failed (%s); retrying in %.1f s", exc, self._backoff)
                self._stopping.wait(self._backoff)
                continue
            self._backoff = 0.0
            if got:
                if self.leases is not None:
                    self.leases.hold(d.tag for d in got)
                with self._cond:
                    self._in_flight += len(got)
                try:
                    self.on_deliveries(got)
                except Exception:  # on_deliveries answers for its messages; this keeps the loop alive
                    log.exception("handing over %d message(s) failed", len(got))

    def _next_lists(self) -> list[str]:
        """The lists to read, in order: priority steps first; within a step the queues take
        turns at going first, so one model's backlog cannot starve another's."""
        self._turn += 1
        out: list[str] = []
        for step in self._steps:
            k = self._turn % len(step)
            out += step[k:] + step[:k]
        return out

    def _take(self, room: int) -> list[Delivery]:
        self.doorbell.clear()
        flat = self._fetch_now(room)
        if not flat:
            # Nothing queued: wait for the doorbell (it rings as soon as a queue
            # changes, and takes nothing), then fetch again through the atomic Lua call.
            self.doorbell.wait(self.idle_block_s)
            if self._stopping.is_set():
                return []
            self.doorbell.clear()
            flat = self._fetch_now(room)
        now = time.time()
        out = []
        for i in range(0, len(flat), 3):
            key, raw, tag = flat[i : i + 3]
            out.append(Delivery(_text(key), raw if isinstance(raw, bytes) else raw.encode(), _text(tag), now))
        return out

    def _fetch_now(self, room: int) -> list[bytes | str]:
        lists = self._next_lists()
        got: list[bytes | str] = self._fetch(
            keys=[UNACKED, UNACKED_INDEX, *lists], args=[room, self.max_message_bytes, WIRE_VERSION]
        )
        return got


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
