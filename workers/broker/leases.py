"""A worker's heartbeat lease, and taking back the messages of workers that died.

kombu's Redis transport acknowledges late by keeping every delivered message in the
``unacked`` hash, scored in ``unacked_index`` by delivery time, and restores those
older than the visibility timeout. Alone, that makes a killed worker's jobs wait the
whole timeout (a minute by default), and the timeout must outlast the slowest batch.
inferq's workers do better with two rules, each checked again atomically at take-back
(``tasks/lua/take_back.lua``):

- **The lease rule (fast).** Each worker keeps an alive key (``tasks/liveness.py``)
  that it renews every ``lease_s / 5`` seconds with a TTL of ``lease_s`` (5 s by
  default), and ``fetch.lua`` records it as the holder of every message it takes
  (``HOLDERS``). A message whose holder's alive key is gone is taken back at once: a
  SIGKILLed, OOM-killed or lost worker's jobs run elsewhere about ``lease_s`` + 1 s
  after it died. A live worker is never taken from, however long its batch runs: its
  key is renewed by this thread, not by the batch.
- **The visibility-timeout rule (last resort).** A message whose score nobody renewed
  for the visibility timeout is taken back too. The holder renews the scores of the
  messages it still holds every quarter of the timeout (one call per quarter for up
  to a thousand messages), so this rule takes only what nobody looks after: messages
  recorded without a holder (taken by an older inferq worker during a rolling upgrade,
  or by a plain Celery worker), and messages their live worker gave up
  (``Fetcher.abandon``: results it could not store, to be tried again). Those
  renewals stay for that reason; they cost nothing per job.

**One call per beat.** A beat is one Lua call (``tasks/lua/beat.lua``): it renews the
alive key and this worker's entry in ``LEASES`` (worker id -> lease end), and tries to
take the sweep turn (``SET NX PX`` of one beat interval), so one worker per interval
sweeps however many there are. The sweeper reads the workers whose lease ended on the
index, checks their alive keys, and only if one is dead reads the holder records; it
gets back the dead workers' delivery tags (and, for the slower rule, how many entries
are older than the visibility timeout). An idle worker thus costs Redis one command
per second, a sweep O(log workers) unless someone died.

**What a lapse means.** The alive key exists exactly while its worker renewed it within
``lease_s`` (the leader election in ``fetcher.py`` relies on this too). A worker cut
off from Redis, or frozen, for longer than that loses its messages to others, which run
them again (a documented duplicate; its late acks touch only the old delivery tags). A
beat that finds its own key gone says so in the log. The key has a TTL, so a Redis with
a ``volatile-*`` eviction policy could evict it early and hand a live worker's jobs to
another: run the broker with ``noeviction`` (as ``docker-compose.yml`` does).

A take-back puts the message at the head of its priority list (it runs next) under a
new delivery tag, so a worker that was only cut off, and comes back to ack or renew
the old tag, cannot touch the new delivery's record. A sweep takes back messages of
inferq's model queues only (``inferq.<model>.<variant>``); other entries are left to
kombu's own sweep. Ages are measured on Redis's clock (``TIME``), never a worker's.

On a graceful stop the worker stores, acks or puts back everything it holds first, and
only then deletes its alive key and index entry (``stop``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

from tasks import lua
from tasks.constants import DEFAULT_LEASE_S
from tasks.kombu_layout import (
    UNACKED,
    UNACKED_INDEX,
    decode_unacked_entry,
    is_model_queue,
    redelivery,
)
from tasks.liveness import HOLDERS, LEASES, SWEEP_TURN, alive_key, new_worker_id

log = logging.getLogger(__name__)

#: Beats per lease: a lease survives four lost or late beats in a row.
BEATS_PER_LEASE = 5
#: Most dead workers' messages one sweep takes back; the rest follow on the next beats.
SWEEP_BATCH = 1000
#: Renewals per Lua call (a script's arguments are bounded).
RENEW_PIECE = 1000


class Leases(threading.Thread):
    """Keeps this worker's lease and message scores renewed and takes back dead workers'
    messages, on its own thread."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        visibility_timeout_s: float,
        on_taken_back: Callable[[str, int], None] | None = None,
        *,
        worker_id: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        """``worker_id``: the id ``fetch.lua`` records as holder (``tasks.liveness.new_worker_id``;
        a fresh one when omitted). ``on_taken_back(queue, n)`` is told of each sweep's
        take-backs (for metrics)."""
        super().__init__(name="inferq-leases", daemon=True)
        self.client = client
        self.on_taken_back = on_taken_back
        self.visibility_timeout_s = visibility_timeout_s
        self.worker_id = worker_id or new_worker_id()
        self.lease_s = lease_s
        self.beat_every_s = lease_s / BEATS_PER_LEASE
        #: Renew message scores four times per timeout: a score survives three lost renewals.
        self.renew_every_s = max(0.2, visibility_timeout_s / 4)
        self.sweep_every_s = max(0.2, min(visibility_timeout_s / 4, 5.0))
        self._alive_key = alive_key(self.worker_id)
        self._alive_prefix = alive_key("")
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._beaten = False
        self._failing = False
        self._next_expiry_sweep = 0.0
        self._beat = client.register_script(lua.source("beat"))
        self._take_back = client.register_script(lua.source("take_back"))
        self._renew = client.register_script(lua.source("renew"))
        self.taken_back = 0

    def hold(self, tags: Iterable[str]) -> None:
        with self._lock:
            self._held.update(t for t in tags if t)

    def release(self, tags: Iterable[str]) -> None:
        with self._lock:
            self._held.difference_update(tags)

    @property
    def held(self) -> int:
        return len(self._held)

    def start(self) -> None:
        """Beat once before the thread starts, so this worker's alive key exists before
        its fetcher takes its first message (never a holder without a lease)."""
        try:
            self.beat()
        except redis.RedisError as exc:  # broker away: the thread keeps trying
            log.warning("first heartbeat failed: %s", exc)
        super().start()

    def stop(self) -> None:
        """Stop beating and end the lease: call once this worker has stored, acked or put
        back what it held. Its alive key and index entry go at once, so whatever it still
        holds (a put-back that failed) is taken back by the next sweep, not a lease later."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=max(2.0, self.lease_s))
        if not self._beaten:
            return
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self._alive_key)
            pipe.zrem(LEASES, self.worker_id)
            pipe.execute()
        except redis.RedisError as exc:  # the key lapses by itself within lease_s
            log.warning("could not end this worker's lease (it lapses within %g s): %s", self.lease_s, exc)

    def run(self) -> None:
        next_beat = time.monotonic() + self.beat_every_s
        next_renew = time.monotonic() + self.renew_every_s
        while not self._stop_event.wait(max(0.0, min(next_beat, next_renew) - time.monotonic())):
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + self.beat_every_s
                    self.beat()
                if now >= next_renew:
                    next_renew = now + self.renew_every_s
                    self.renew()
            except redis.RedisError as exc:  # broker away: try again next beat, say so once
                if not self._failing:
                    log.warning("heartbeat failed (retrying every %g s): %s", self.beat_every_s, exc)
                self._failing = True
                continue
            except Exception:  # this thread must outlive any surprise: it keeps the lease alive
                log.exception("lease upkeep failed")
            if self._failing:
                log.info("heartbeat reaches Redis again")
                self._failing = False

    def beat(self) -> int:
        """Renew this worker's lease; on this worker's sweep turn, take back what dead
        workers held (and, now and then, what nobody renewed for the visibility timeout).
        Returns how many messages this beat took back."""
        got = self._beat(
            keys=[self._alive_key, LEASES, SWEEP_TURN, HOLDERS, UNACKED_INDEX],
            args=[
                self.worker_id,
                int(self.lease_s * 1000),
                max(100, int(self.beat_every_s * 1000)),
                self.visibility_timeout_s,
                self._alive_prefix,
                SWEEP_BATCH,
            ],
        )
        lapsed, swept, expired = int(got[0]), int(got[1]), int(got[2])
        if lapsed and self._beaten:
            log.warning(
                "this worker's lease lapsed (no heartbeat reached Redis for over %g s): "
                "other workers may have taken back messages it holds, which then run twice",
                self.lease_s,
            )
        self._beaten = True
        if not swept:
            return 0
        taken = 0
        dead = [(_text(got[i]), _text(got[i + 1])) for i in range(3, len(got), 2)]
        if dead:
            taken += self.take_back_dead(dead)
        if expired and time.monotonic() >= self._next_expiry_sweep:
            self._next_expiry_sweep = time.monotonic() + self.sweep_every_s
            taken += self.sweep()
        return taken

    def renew(self) -> None:
        """Stamp every message this worker holds with the current time (only if still
        unacked), which keeps them from the visibility-timeout rule."""
        with self._lock:
            tags = list(self._held)
        for i in range(0, len(tags), RENEW_PIECE):
            self._renew(keys=[UNACKED_INDEX], args=tags[i : i + RENEW_PIECE])

    def take_back_dead(self, tags: list[tuple[str, str]]) -> int:
        """Put back ``(tag, holder)`` messages whose holder is dead (re-checked in Redis,
        message by message); returns how many went back."""
        per_queue: dict[str, int] = {}
        self._put_back(tags, 0, per_queue)
        return self._report(per_queue, "whose worker died (its heartbeat lease lapsed)")

    def sweep(self, page: int = 500, max_pages: int = 20) -> int:
        """Put back model-queue messages nobody renewed for the visibility timeout."""
        sec, usec = self.client.time()
        ceil = sec + usec / 1e6 - self.visibility_timeout_s
        with self._lock:
            mine = self._held.copy()
        per_queue: dict[str, int] = {}
        skipped = 0  # entries left where they are (others' queues, our own): page past them
        for _ in range(max_pages):
            tags = self.client.zrangebyscore(UNACKED_INDEX, "-inf", ceil, start=skipped, num=page)
            if not tags:
                break
            # Ours are renewed on the next turn: never taken back by ourselves.
            todo = [(t, "") for t in map(_text, tags) if t not in mine]
            skipped += len(tags) - self._put_back(todo, ceil, per_queue)
            if len(tags) < page:
                break
        return self._report(per_queue, "whose lease was not renewed for the visibility timeout")

    def _report(self, per_queue: dict[str, int], why: str) -> int:
        n = sum(per_queue.values())
        if n:
            log.warning("took back %d message(s) %s", n, why)
            self.taken_back += n
            if self.on_taken_back is not None:
                for queue, k in per_queue.items():
                    self.on_taken_back(queue, k)
        return n

    def _put_back(self, tags: list[tuple[str, str]], ceil: float, per_queue: dict[str, int]) -> int:
        """Take back each ``(tag, holder)`` by either rule (``take_back.lua``), in one
        round trip; returns how many went back."""
        if not tags:
            return 0
        entries = self.client.hmget(UNACKED, [t for t, _ in tags])
        pipe = self.client.pipeline(transaction=False)
        queued: list[str] = []
        foreign: list[str] = []
        for (tag, holder), entry in zip(tags, entries, strict=True):
            if entry is None:
                continue  # acked between the two reads
            try:
                message, _exchange, routing_key = decode_unacked_entry(entry)
                if not is_model_queue(routing_key):
                    raise ValueError("not a model queue")
                target, payload = redelivery(message, routing_key)
            except (ValueError, TypeError, AttributeError, KeyError):
                log.warning("unacked entry %r is not a kombu message of a model queue; left for kombu", tag)
                if holder:
                    foreign.append(tag)
                continue
            self._take_back(
                keys=[UNACKED, UNACKED_INDEX, target, HOLDERS],
                args=[tag, ceil, payload, holder, self._alive_prefix],
                client=pipe,
            )
            queued.append(routing_key)
        if foreign:
            # Dropping the holder record leaves the entry to the visibility-timeout rule
            # (kombu's), and lets the dead worker leave the index.
            self.client.hdel(HOLDERS, *foreign)
        taken = 0
        for routing_key, won in zip(queued, pipe.execute() if queued else [], strict=True):
            if won:
                per_queue[routing_key] = per_queue.get(routing_key, 0) + 1
                taken += 1
        return taken


def _text(v: bytes | str) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v
