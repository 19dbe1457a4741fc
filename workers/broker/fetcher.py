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

**No idle herd.** Every worker's doorbell hears every push, but only one idle worker
per set of queues acts on it: the *leader* (``tasks/liveness.py``), chosen inside the
fetch script. The other idle workers sleep in a ``BLPOP`` on the queue set's wake
list. When the leader's fetch takes work, the same script hands listening on: it clears
the leader key and pushes one token, which Redis gives to exactly one sleeping worker;
that one becomes the leader with its next fetch. So a job costs about two fetches
however many workers are idle (the leader's, and its successor's first look), where
every idle worker used to race for it. A leader is live while its alive key exists
(``Leases``' heartbeat): a worker that dies as leader is replaced once its lease
lapses. A worker whose last fetch was full fetches again at once without taking part
in leadership: more is queued. Without a ``worker_id`` (tools, tests), a fetcher keeps
the old way: it waits on its doorbell and fetches on every ring.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from tasks import lua
from tasks.constants import DEFAULT_MAX_MESSAGE_BYTES, WIRE_VERSION
from tasks.kombu_layout import UNACKED, UNACKED_INDEX, queue_lists
from tasks.liveness import HOLDERS, alive_key, leader_key, sleepers_key, wake_key
from workers.broker.doorbell import Doorbell
from workers.broker.leases import Leases

log = logging.getLogger(__name__)

_ACK_PIECE = 1000
#: A worker holds at least this many messages however big they are: one being computed
#: and the next read meanwhile need two (with one, the model would wait for every
#: fetch); with two, each fetch took one bulk message, and the extra fetches cost a bulk
#: run 2-4% end to end (docs/benchmarks.md, "Seventh session"); four let a fetch take a few.
MIN_MESSAGES = 4


def message_limit(capacity: int, jobs_per_message: float | None) -> int:
    """How many unacknowledged messages a worker holds: ``capacity`` counts jobs, and a
    message of many jobs (a bulk message: hundreds) fills it at once, so a worker with a
    backlog of bulk messages does not take a hundred of them (their inputs in its memory,
    none left for other workers); never fewer than ``MIN_MESSAGES``. Until a fetch has
    shown how many jobs a message holds (``None``), ``MIN_MESSAGES``: the next fetch
    follows at once if more is queued."""
    least = min(capacity, MIN_MESSAGES)
    if jobs_per_message is None:
        return least
    return max(least, min(capacity, math.ceil(capacity / max(1.0, jobs_per_message))))


#: How long a worker whose lease lapsed waits before it looks again (its beat renews it).
LAPSED_WAIT_S = 0.2


@dataclass(frozen=True)
class Delivery:
    """One message taken from a queue list; ``tag`` is empty for a message that isn't kombu's."""

    list_key: str
    raw: bytes
    tag: str
    received_at: float


class Fetcher(threading.Thread):
    """Feeds ``on_deliveries`` with unacknowledged messages holding up to about ``capacity``
    jobs at a time (``message_limit``): ``on_deliveries`` returns how many jobs the
    messages it was given held (None: one each)."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        queues: list[str],
        on_deliveries: Callable[[list[Delivery]], int | None],
        *,
        capacity: int,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        leases: Leases | None = None,
        idle_block_s: float = 10.0,
        follow_block_s: float = 10.0,
        worker_id: str = "",
    ) -> None:
        """``worker_id``: this worker's id (``tasks.liveness``), recorded as the holder of
        each message and used for leadership; its alive key must be kept up by ``leases``.
        ``idle_block_s``: how long an idle leader trusts its doorbell before looking
        anyway; ``follow_block_s``: how long a sleeping follower waits for a wake token
        before it looks whether the leader is still alive."""
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
        self.follow_block_s = follow_block_s
        self.worker_id = worker_id
        self._leader_key = leader_key(sorted(queues))
        self._wake_key = wake_key(sorted(queues))
        self._sleepers_key = sleepers_key(sorted(queues))
        self._alive_prefix = alive_key("")
        self._more_queued = False  # the last fetch was full: fetch again without waiting
        #: "take" once a wake token handed this worker listening, "woke" after a sleep without one
        self._next_mode = "idle"
        self._lapsed = False  # the last fetch found this worker's own lease lapsed
        #: fetch script calls that looked at the queues, and those that found them empty
        self.fetches = 0
        self.empty_fetches = 0
        self._follow_conn: Any = None
        self._follow_lock = threading.Lock()
        self._fetch = client.register_script(lua.source("fetch"))
        self._ack = client.register_script(lua.source("ack"))
        self._resign_script = client.register_script(lua.source("resign"))
        self.doorbell = Doorbell(client, [lst for step in self._steps for lst in step])
        self._in_flight = 0
        #: Jobs per message in the last fetch (None before the first).
        self._jobs_per_message: float | None = None
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._backoff = 0.0

    # --- called by the batcher thread -----------------------------------------------

    def ack(self, deliveries: list[Delivery], input_keys: list[str] | None = None) -> None:
        """Forget delivered messages (their results are stored) and their inputs: one
        atomic script (a worker killed mid-ack must not leave a hash entry without its
        index entry: nothing would ever sweep it)."""
        tags = [d.tag for d in deliveries if d.tag]
        keys = input_keys or []
        # Lua's unpack takes a few thousand values at most: large acks go in pieces.
        for i in range(0, max(len(tags), len(keys)), _ACK_PIECE):
            self._ack(
                keys=[UNACKED, UNACKED_INDEX, HOLDERS, *keys[i : i + _ACK_PIECE]],
                args=tags[i : i + _ACK_PIECE],
            )
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
                    pipe.hdel(HOLDERS, d.tag)
            pipe.execute()
        self._release(deliveries)

    @property
    def limit(self) -> int:
        """How many unacknowledged messages this worker holds at most (``message_limit``)."""
        return message_limit(self.capacity, self._jobs_per_message)

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
        with self._follow_lock:  # a follower asleep in BLPOP wakes now
            if self._follow_conn is not None:
                with contextlib.suppress(Exception):
                    self._follow_conn.disconnect()
        with self._cond:
            self._cond.notify()

    def stop_leases(self) -> None:
        if self.leases is not None:
            self.leases.stop()

    # --- the fetch loop -------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                while self._in_flight >= self.limit and not self._stopping.is_set():
                    self._cond.wait(0.5)
                room = self.limit - self._in_flight
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
                    jobs = self.on_deliveries(got)
                except Exception:  # on_deliveries answers for its messages; this keeps the loop alive
                    log.exception("handing over %d message(s) failed", len(got))
                else:
                    self._jobs_per_message = (jobs or len(got)) / len(got)
        self._resign()

    def _resign(self) -> None:
        """A stopping leader hands listening on at once instead of after its lease lapses."""
        if not self.worker_id:
            return
        try:
            self._resign_script(
                keys=[self._leader_key, self._wake_key, self._sleepers_key], args=[self.worker_id]
            )
        except Exception as exc:  # broker away: the lease lapses and a follower takes over
            log.debug("could not hand over listening: %s", exc)

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
        if self._more_queued:
            lead, flat = self._fetch_now(room, "busy")
            if flat:
                return self._deliveries(flat, room)
        self.doorbell.clear()
        mode, self._next_mode = self._next_mode, "idle"
        lead, flat = self._fetch_now(room, mode)
        if not flat:
            if self._lapsed:
                self._next_mode = mode  # as it was: look again once the beat renews the lease
                return []
            if not lead and self.worker_id:
                # Another idle worker listens: sleep until it hands listening on.
                self._next_mode = "take" if self._follow() else "woke"
                self.doorbell.sync()  # changes heard while asleep are old news
                return []
            # Nothing queued: wait for the doorbell (it rings as soon as a queue
            # changes, and takes nothing), then fetch through the atomic Lua call.
            self.doorbell.wait(self.idle_block_s)
            if self._stopping.is_set():
                return []
            self.doorbell.clear()
            lead, flat = self._fetch_now(room, "idle")
        return self._deliveries(flat, room)

    def _deliveries(self, flat: list[bytes | str], room: int) -> list[Delivery]:
        now = time.time()
        out = []
        for i in range(0, len(flat), 3):
            key, raw, tag = flat[i : i + 3]
            out.append(Delivery(_text(key), raw if isinstance(raw, bytes) else raw.encode(), _text(tag), now))
        self._more_queued = len(out) >= room
        return out

    def _fetch_now(self, room: int, mode: str) -> tuple[bool, list[bytes | str]]:
        lists = self._next_lists()
        got: list[Any] = self._fetch(
            keys=[
                UNACKED,
                UNACKED_INDEX,
                HOLDERS,
                self._leader_key,
                self._wake_key,
                self._sleepers_key,
                *lists,
            ],
            args=[
                room,
                self.max_message_bytes,
                WIRE_VERSION,
                self.worker_id,
                mode,
                self._alive_prefix,
                1 if self._in_flight else 0,
                self.follow_block_s + 5,
            ],
        )
        if int(got[0]) < 0:
            # This worker's lease lapsed (a stalled beat, a restarted Redis): take nothing
            # until the next beat renews it.
            self._stopping.wait(LAPSED_WAIT_S)
            self._lapsed = True
            return False, []
        self._lapsed = False
        lead, flat = bool(int(got[0])), got[1:]
        if mode == "busy" or not self.worker_id or lead or flat:
            self.fetches += 1  # a follower's early answer looked at no queue
            if not flat:
                self.empty_fetches += 1
        return lead, flat

    def _follow(self) -> bool:
        """Sleep on the wake list until the leader hands listening on (or ``follow_block_s``
        passes, to look whether the leader still lives). Its own connection, so that
        ``stop`` can cut the wait short. True when handed a token."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        with self._follow_lock:
            self._follow_conn = conn
        try:
            if self._stopping.is_set():
                return False
            conn.send_command("BLPOP", self._wake_key, int(max(1, self.follow_block_s)))
            return conn.read_response() is not None
        except Exception:
            if not self._stopping.is_set():
                conn.disconnect()
                raise
            return False  # stop cut the wait short
        finally:
            with self._follow_lock:
                self._follow_conn = None
            pool.release(conn)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
