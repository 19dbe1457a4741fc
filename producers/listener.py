"""Wait for results without polling lag.

A ``ResultListener`` owns one pub/sub connection and one thread: jobs are watched from
the moment they are submitted, so a result is seen (and its end-to-end time stamped)
within a round trip of being stored, instead of Celery's classic 0.5 s polling
interval, and however late the caller gets round to ``wait``.

Two ways in. A job this client sends itself names the client's one **reply channel**
(``inferq:reply:<random id>``, the message's ``reply_to``), subscribed once when the
thread connects: the worker publishes there one ``ReplyBatch`` per batch with all of
this client's records, so such a job costs no subscription and one pub/sub message per
batch, not three per job. Any other job (one shared with another producer, a handle's,
``result(wait=True)``) is watched on its own channel, as Celery's Redis backend
publishes every state on a channel named like the result key. Cancels arrive on
``CANCEL_CHANNEL``, subscribed beside the reply channel.

No result is missed: a job is sent only once the reply channel's subscription is
confirmed (``Subscribed``; at once on a connection that has it), so its result is
published to a listener already there; after Redis confirms a job's own subscription,
the listener reads the key once, so a result stored before the subscription took effect
is found by the read. When the connection drops (Redis restarted, network cut), the
listener reconnects with backoff, subscribes again (the reply channel and every job
still awaited on its own), and once confirmed reads the keys of every job still awaited
(one ``MGET``): what was stored while it was away is found. Waiters notice nothing but
the delay.

Resources stay bounded. The thread sleeps on the socket (and on a pipe that a new
watch writes to), so it wakes for a message or a watch, never on a timer: an idle
client with jobs pending costs no CPU. A result nobody waits for is kept only among
the most recent ``KEEP_ARRIVED_MAX`` and ``KEEP_ARRIVED_BYTES`` (a web backend may
submit here and poll from elsewhere); past that only its arrival time is kept, and a
late ``wait`` reads the result again from Redis, its end-to-end time still stamped
when it arrived. A reply batch's records are kept as the bytes that came and read
when taken (``producers/heard.py``): ``collect`` hands them over so, ``wait`` parsed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import selectors
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis

from producers.flags import Flags
from producers.heard import ArrivalStore, Heard, HeardArrival, Row, batch_records, final_raw, record_of
from producers.latch import Latch
from producers.sender import Outgoing
from tasks.celery_message import with_reply_to
from tasks.constants import CANCEL_CHANNEL, REPLY_CHANNEL_PREFIX, RESULT_KEY_PREFIX
from tasks.errors import Timeout
from tasks.keys import result_key
from tasks.wire import ReplyBatch, StatusRecord
from tasks.wire.replies import REPLY_COLUMNS_MARK

log = logging.getLogger(__name__)

Arrival = tuple[StatusRecord, float]  # (the job's ready status record, unix time it was seen)

#: Keys read per ``MGET`` after a (re)subscription.
READ_CHUNK = 1000
#: Results that arrived but were not kept, read again per ``MGET`` as a wait reaches them:
#: well under ``KEEP_ARRIVED_MAX``, so arrivals meanwhile do not push them out again.
REREAD_CHUNK = 256
#: At most this many arrivals taken by ``collect`` under one hold of the lock.
TAKE_RUN = 256


def new_reply_channel() -> str:
    """A client's reply channel: unguessable, one per client and process, named so that
    workers answer it with columns (``ReplyBatch`` version 2; older workers, version 1)."""
    return REPLY_CHANNEL_PREFIX + REPLY_COLUMNS_MARK + secrets.token_hex(16)


def name_reply_channel(outgoing: Iterable[Outgoing], channel: str) -> None:
    """Have every message (each part of a split one too) name ``channel`` as its ``reply_to``."""
    for out in outgoing:
        out.message = with_reply_to(out.message, channel)
        if out.more:
            out.more = [(key, with_reply_to(m, channel)) for key, m in out.more]


class Subscribed:
    """What ``ResultListener.watch`` returns: done once the ids the caller is sending can be
    sent, the reply channel's subscription confirmed (at once when it already was, or
    there are none)."""

    __slots__ = ("done", "ids", "left")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ids: list[str] = []
        self.left = 0

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)


class ResultListener:
    """One background thread that watches job ids and records when each result arrives."""

    #: Longest the thread sleeps between turns when nothing arrives (it wakes at once for
    #: a message or a new watch; the turn only prunes).
    IDLE_BLOCK_S = 1.0
    #: A result nobody waited for is dropped after this long (a web backend may submit
    #: here and poll from elsewhere); so is a watch that never saw a result.
    KEEP_ARRIVED_S = 300.0
    KEEP_WATCH_S = 3600.0
    #: At most this many results nobody waits for are held (the newest), holding at most
    #: this many bytes of records; older ones are read again from Redis if someone waits
    #: after all. Their arrival times are kept, up to ``KEEP_TIMES_MAX``, so end-to-end
    #: times stay right. A bulk submission's results arrive while it is still sending, as
    #: rows of reply blocks (``producers/heard.py``) of ~300 bytes each for a small model:
    #: the bytes bound is the one that binds (~150,000 digits results). A count of 65,536
    #: bound first: past it, a 120,000-input ``submit_many`` evicted 86,000 results before
    #: its ``wait_all`` began, then read or watched each of them again (the client's CPU
    #: 7.95 s against 4.05 s with none evicted, in one probe run).
    KEEP_ARRIVED_MAX = 262_144
    KEEP_ARRIVED_BYTES = 48 << 20
    KEEP_TIMES_MAX = 20_000
    #: Channels whose result came are unsubscribed together, at most this often or once
    #: this many are done: one command per second rather than one per job (a job at a
    #: time paid SUBSCRIBE, a read and UNSUBSCRIBE each).
    UNSUBSCRIBE_EVERY_S = 1.0
    UNSUBSCRIBE_BATCH = 512
    #: A job awaited on the reply channel for this long while nothing came on it is
    #: watched on its own channel too (subscribed, its key read): a worker of an inferq
    #: from before reply channels publishes only there (a rolling upgrade).
    REPLY_SILENCE_S = 5.0

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._arrived = ArrivalStore()
        self._events = Flags()
        self._watched_at: dict[str, float] = {}
        self._waiters: dict[str, int] = {}
        self._pruned_at = time.monotonic()
        self._to_subscribe: list[str] = []
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._times: OrderedDict[str, float] = OrderedDict()
        #: The reply channel (one per process: a child after a fork makes its own), whether
        #: its subscription is confirmed on the current connection, the ids awaited on it,
        #: and the senders waiting for the confirmation (their ids need no read then).
        self._reply = new_reply_channel()
        self._reply_ready = False
        self._via_reply: set[str] = set()
        self._reply_pending: list[Subscribed] = []
        self._reply_heard_at = time.monotonic()
        self._silence_checked_at = 0.0
        self._wake_r: int | None = None
        self._selector: selectors.BaseSelector | None = None
        self._selected: object = None  # the socket the selector waits on
        self._wake_w: int | None = None

    @property
    def reply_channel(self) -> str:
        """The channel to name in the ``reply_to`` of the jobs this client sends (read it
        after ``watch``: a child process after a fork gets its own)."""
        return self._reply

    def watch(self, job_ids: Iterable[str], sending: Iterable[str] = ()) -> Subscribed:
        """Start watching ids (cheap; call it before the job is sent).

        ``sending``: those of the ids the caller is about to send itself, naming
        ``reply_channel``: they are awaited on it, with no subscription of their own. No
        result can be stored for them before they are sent, so once the reply channel is
        confirmed they need no read: the caller waits for that (``settle``; at once on a
        connection that has it), then sends. Every other id is subscribed on its own
        channel and read once confirmed.
        """
        self._ensure_thread()
        mine = set(sending)
        subscribed = Subscribed()
        with self._lock:
            idle = not self._to_subscribe
            for jid in job_ids:
                if jid not in self._events and jid not in self._arrived:
                    self._events[jid] = False
                    self._watched_at[jid] = time.monotonic()
                    if jid in mine:
                        self._via_reply.add(jid)
                        subscribed.ids.append(jid)
                    else:
                        self._to_subscribe.append(jid)
            wait = bool(subscribed.ids) and not self._reply_ready
            if wait:
                self._reply_pending.append(subscribed)
            # Only the watch that finds nothing pending wakes the thread: the others' ids
            # are taken in the same turn (it takes the list under this lock).
            poke = idle and bool(self._to_subscribe)
        if not wait:
            subscribed.done.set()
        if poke:
            self._wake.set()
            self._poke()
        return subscribed

    def settle(self, subscribed: Subscribed, timeout: float) -> None:
        """Wait up to ``timeout`` for the reply channel to be confirmed; if it is not by
        then, ``watch``'s ids are read once it is (the caller sends either way)."""
        if subscribed.done.wait(max(0.0, timeout)):
            return
        with self._lock:
            if subscribed in self._reply_pending:
                self._reply_pending.remove(subscribed)

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop what arrived for these ids (they are about to run again), unless someone is
        waiting on it right now."""
        with self._lock:
            for jid in job_ids:
                if jid in self._arrived and jid not in self._waiters:
                    del self._arrived[jid]
                    self._events.pop(jid, None)
                    self._watched_at.pop(jid, None)
                    self._via_reply.discard(jid)
                self._times.pop(jid, None)

    def wait(
        self, job_ids: Iterable[str], timeout: float | None, progress: Callable[[int], None] | None = None
    ) -> dict[str, Arrival]:
        """Block until every id has a ready state; raises ``Timeout`` naming how many did not.

        Several callers may wait on one id (two requests for the same input share one
        job): an arrival is kept until its last waiter has read it. A result that arrived
        but was not kept (``KEEP_ARRIVED_MAX``, ``KEEP_ARRIVED_BYTES``) is read again,
        ``REREAD_CHUNK`` keys per ``MGET`` as the wait reaches them, instead of being
        watched anew.
        """
        heard = self.collect(job_ids, timeout, progress)
        return {jid: (record_of(h, jid), at) for jid, (h, at) in heard.items()}

    def collect(
        self,
        job_ids: Iterable[str],
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
        each: Callable[[str, HeardArrival], None] | None = None,
    ) -> dict[str, HeardArrival]:
        """``wait``, with each record as it was heard: a reply batch's still as its bytes
        (``producers/heard.py`` reads them; ``wait_all`` straight into ``Result``s).

        ``each(job_id, arrival)`` is called (on this thread) as each arrival is taken, so a
        caller can read results while the rest are still coming instead of all after the
        last one (``wait_all``: reading 30,000 results took a tenth of a bulk run's time
        after its last arrival).
        """
        ids = list(dict.fromkeys(job_ids))
        with self._lock:
            # Results that arrived but were not kept (their arrival time kept, or for a bulk
            # wait any id not watched here: its time was let go too, or another process
            # sent it) are read as the wait reaches them, REREAD_CHUNK per MGET; only
            # those not stored yet are then watched, on their own channels. Watching each
            # first (a SUBSCRIBE per job, then a read) cost a bulk wait past the bound
            # several times its reading.
            bulk = len(ids) > 1
            evicted = [j for j in ids if j not in self._events and (bulk or j in self._times)]
            # A bulk wait finds most of its results here: taken under this one lock. A
            # single id goes the way below (no second pass, no extra lock).
            out = self._take_arrived(ids) if bulk else {}
        at = {j: i for i, j in enumerate(evicted)}
        rest = [j for j in ids if j not in out] if out else ids
        self.watch([j for j in rest if j not in at] if at else rest)
        deadline = None if timeout is None else time.monotonic() + timeout
        if out and each is not None:
            for jid, taken in out.items():
                each(jid, taken)
        if out and progress is not None:
            progress(len(out))
        n = 0
        while n < len(rest):
            if n:  # (the first was looked at above)
                # Those that came meanwhile (the rest of a reply batch, after the wait for its
                # first), taken as a run under one lock, not a latch and three locks each.
                with self._lock:
                    run = self._take_arrived(itertools.islice(rest, n, n + TAKE_RUN), run=True)
                if run:
                    out.update(run)
                    if each is not None:
                        for jid, taken in run.items():
                            each(jid, taken)
                    if progress is not None:
                        progress(len(run))
                    n += len(run)
                    continue
            jid = rest[n]
            if jid in at and jid not in self._events:
                self._reread(evicted[at[jid] : at[jid] + REREAD_CHUNK])
            event = Latch()  # made outside the lock (``Flags.arm``)
            with self._lock:
                blocker = self._events.arm(jid, event)
                self._waiters[jid] = self._waiters.get(jid, 0) + 1
            try:
                while blocker is not None and not blocker.is_set():
                    if self._error is not None:
                        raise Timeout(f"result listener failed: {self._error}")
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        missing = 1 + sum(not self._ready(j) for j in rest[n + 1 :])
                        raise Timeout(
                            f"timed out after {timeout} s waiting for {missing} of {len(ids)} job(s)"
                        )
                    blocker.wait(0.5 if left is None else min(left, 0.5))
                with self._lock:
                    arrival = self._arrived.get(jid)
            finally:
                with self._lock:
                    self._waiters[jid] -= 1
                    if self._waiters[jid] == 0:
                        del self._waiters[jid]
                        if jid in self._arrived:  # the last reader forgets it
                            del self._arrived[jid]
                            self._events.pop(jid, None)
                            self._watched_at.pop(jid, None)
            if arrival is None and self._error is not None:
                raise Timeout(f"result listener failed: {self._error}")
            if arrival is None:  # a stale watch was pruned: watch and read it anew
                return {
                    **out,
                    **self.collect(
                        rest[n:], None if deadline is None else deadline - time.monotonic(), progress, each
                    ),
                }
            out[jid] = arrival
            if each is not None:
                each(jid, arrival)
            if progress is not None:
                progress(1)
            n += 1
        return out

    def _take_arrived(self, ids: Iterable[str], run: bool = False) -> dict[str, HeardArrival]:
        """The arrivals of ``ids`` already here (lock held): no lock, latch and waiter count
        per id. ``run``: only those up to the first not here yet. The last reader forgets
        them."""
        out: dict[str, HeardArrival] = {}
        arrived, waiters, events, watched = self._arrived, self._waiters, self._events, self._watched_at
        for jid in ids:
            arrival = arrived.get(jid)
            if arrival is None:
                if run:
                    break
                continue
            out[jid] = arrival
            if jid not in waiters:
                del arrived[jid]
                events.pop(jid, None)
                watched.pop(jid, None)
        return out

    def _reread(self, ids: list[str]) -> None:
        """Ids whose results are not held here (arrivals not kept, or a bulk wait's ids not
        watched here), read (on the caller's thread); any not found ready (not stored
        yet, expired meanwhile, or Redis failing) are watched as usual."""
        try:
            raws = self._read([result_key(j) for j in ids])
        except redis.RedisError:
            raws = [None] * len(ids)
        missing: list[str] = []
        with self._lock:
            for jid, raw in zip(ids, raws, strict=True):
                record = StatusRecord.parse(raw, jid)
                if jid in self._events:
                    continue  # watched meanwhile by another waiter
                if record is None or not record.ready:
                    missing.append(jid)
                    continue
                self._events[jid] = True
                self._arrived[jid] = (record, self._times.pop(jid, 0.0) or time.time())
        if missing:
            self.watch(missing)

    def _ready(self, jid: str) -> bool:
        with self._lock:
            return jid in self._arrived or jid not in self._events or self._events.is_set(jid)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._poke()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout=2)
        for fd in (self._wake_r, self._wake_w):
            if fd is not None and self._pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = None

    def _poke(self) -> None:
        """Wake the thread from its sleep on the socket (a new watch, or close)."""
        fd = self._wake_w
        if fd is not None:
            with contextlib.suppress(OSError):  # full (BlockingIOError): it is being woken anyway
                os.write(fd, b"w")

    # --- the listener thread --------------------------------------------------------

    def _ensure_thread(self) -> None:
        # A client created before a fork (gunicorn, Celery prefork) has no thread in the
        # child: start one per process.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                # A parent's jobs answer on the parent's reply channel: watched here (if at
                # all) on their own channels. This process gets its own reply channel.
                self._reply_pending.clear()
                self._via_reply.clear()
                self._reply = new_reply_channel()
            self._reply_ready = False
            self._pid = os.getpid()
            self._error = None  # a new thread, a new chance
            # The old pipe goes (a restart here, or a parent's copy after a fork).
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._wake_r, self._wake_w = os.pipe()  # a fresh one: a parent's is not ours
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._to_subscribe = self._own_channel_ids()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="inferq-results", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._listen()
                return
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
                self._fail(exc)  # a wrong password does not fix itself: tell the waiters
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() - began > 30:
                    delay = 0.1  # a new outage, not the same one continuing
                # Lost the connection: every watch still awaited is subscribed afresh
                # on the next connection, and its key read once confirmed.
                log.warning("result listener lost Redis (%s); reconnecting in %.1f s", exc, delay)
                with self._lock:
                    self._reply_ready = False
                    self._to_subscribe = self._own_channel_ids()
                self._stop.wait(delay)
                delay = min(5.0, delay * 2)
            except Exception as exc:  # surfaced to waiters instead of dying silently
                self._fail(exc)
                return

    def _own_channel_ids(self) -> list[str]:
        """Ids still awaited on their own channels (lock held)."""
        return [j for j in self._events if j not in self._arrived and j not in self._via_reply]

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        with self._lock:
            self._reply_ready = False
            pending, self._reply_pending = self._reply_pending, []
            self._events.wake_all()
        for subscribed in pending:  # they send, and their waiters meet the error
            subscribed.done.set()

    def _listen(self) -> None:
        pubsub = self._client.pubsub()
        # Channels whose result came: unsubscribed in batches (``UNSUBSCRIBE_EVERY_S``),
        # not one command per job. A channel stays quiet once its result is published.
        done: set[str] = set()
        unsubscribed_at = time.monotonic()
        reply = self._reply
        try:
            pubsub.subscribe(reply, CANCEL_CHANNEL)
            while not self._stop.is_set():
                with self._lock:
                    subs, self._to_subscribe = self._to_subscribe, []
                if subs:
                    channels = [result_key(j) for j in subs]
                    done.difference_update(channels)  # watched again (a rerun): keep it
                    pubsub.subscribe(*channels)
                if not pubsub.subscribed:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                confirmed: list[str] = []
                finished: list[str] = []
                reply_confirmed = False
                self._sleep_until_traffic(pubsub)
                msg = pubsub.get_message(timeout=0)
                while msg is not None:
                    channel = _text(msg["channel"])
                    kind = msg["type"]
                    if kind == "message":
                        if channel == reply:
                            self._offer_batch(msg.get("data"))
                        elif channel == CANCEL_CHANNEL:
                            self._offer_cancel(msg.get("data"))
                        elif self._offer(channel, msg.get("data")):
                            finished.append(channel)
                    elif kind == "subscribe":
                        if channel == reply:
                            reply_confirmed = True
                        elif channel != CANCEL_CHANNEL:
                            confirmed.append(channel)
                    msg = pubsub.get_message(timeout=0)
                if reply_confirmed:
                    self._reply_confirmed()
                if confirmed:
                    for channel, raw in zip(confirmed, self._read(confirmed), strict=True):
                        if self._offer(channel, raw):
                            finished.append(channel)
                done.update(finished)
                now = time.monotonic()
                if done and (
                    len(done) >= self.UNSUBSCRIBE_BATCH or now - unsubscribed_at > self.UNSUBSCRIBE_EVERY_S
                ):
                    pubsub.unsubscribe(*done)
                    done.clear()
                    unsubscribed_at = now
                if self._via_reply and now - self._silence_checked_at > 1.0:
                    self._check_silence(now)
                if now - self._pruned_at > 5.0:
                    self._prune(pubsub)
        finally:
            self._close_selector()
            pubsub.close()

    def _check_silence(self, now: float) -> None:
        """Jobs awaited on a reply channel silent for ``REPLY_SILENCE_S``: watched on their
        own channels too (the next turn subscribes them and reads their keys)."""
        self._silence_checked_at = now
        if now - self._reply_heard_at < self.REPLY_SILENCE_S:
            return
        with self._lock:
            late = [
                j
                for j in self._via_reply
                if now - self._watched_at.get(j, now) > self.REPLY_SILENCE_S and j not in self._arrived
            ]
            self._via_reply.difference_update(late)
            self._to_subscribe.extend(late)
        if late:
            log.info("%d job(s) heard nothing on the reply channel for %.0f s; watching their own channels",
                     len(late), self.REPLY_SILENCE_S)  # fmt: skip

    def _read(self, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for at in range(0, len(keys), READ_CHUNK):
            out += self._client.mget(keys[at : at + READ_CHUNK])
        return out

    def _reply_confirmed(self) -> None:
        """The reply channel is subscribed: senders waiting for it may send (their jobs
        need no read); every other job awaited on it is read once, for what was stored
        while no subscription was in place (a reconnect)."""
        self._reply_heard_at = time.monotonic()
        with self._lock:
            self._reply_ready = True
            pending, self._reply_pending = self._reply_pending, []
            unsent = {jid for subscribed in pending for jid in subscribed.ids}
            awaited = [j for j in self._via_reply if j not in unsent and j not in self._arrived]
        for subscribed in pending:
            subscribed.done.set()
        self._read_ids(awaited)

    def _read_ids(self, ids: list[str]) -> None:
        if ids:
            for jid, raw in zip(ids, self._read([result_key(j) for j in ids]), strict=True):
                self._offer_id(jid, raw)

    def _offer_batch(self, data: bytes | str | None) -> None:
        """A ``ReplyBatch``: every record in it for a job awaited here, parsed and handed
        over under one lock. A batch in another version: the keys it names (or, unreadable,
        of every job awaited on the reply channel) are read instead."""
        self._reply_heard_at = time.monotonic()
        batch = ReplyBatch.decode(data if isinstance(data, bytes) else None)
        if not batch.readable:
            log.warning("a reply batch in version %s; reading its jobs' keys instead", batch.version)
            with self._lock:
                ids = [
                    j for j in (batch.ids or self._via_reply) if j in self._events and j not in self._arrived
                ]
            self._read_ids(ids)
            return
        events = self._events
        parse = StatusRecord.parse
        # A version 2 batch's blocks: a ``Row`` per awaited id (as cheap to take as to
        # keep), handed over apart from the records (``ArrivalStore.add_rows``).
        rows: list[tuple[str, Row]] = [
            (jid, Row(block, k)) for block in batch.blocks for k, jid in enumerate(block.ids) if jid in events
        ]
        ready: list[tuple[str, Heard]] = []
        for jid, raw in batch_records(batch):
            if jid in events:  # else nobody here awaits it (any longer)
                # One nobody is blocked on yet (a bulk submission's) is kept as it came and
                # read when taken (``heard.py``); a blocked waiter gets it parsed, here, as
                # before: 64 threads that each parse their own wake-up cost more.
                heard: Heard | None = None if events.awaited(jid) else final_raw(raw)
                if heard is not None:
                    ready.append((jid, heard))
                    continue
                record = parse(raw, jid)
                if record is not None and record.ready:
                    ready.append((jid, record))
        if not ready and not rows:
            return
        now = time.time()
        times, arrived, via_reply = self._times, self._arrived, self._via_reply
        with self._lock:
            if rows:
                new = [(jid, row) for jid, row in rows if events.arrive(jid)]
                via_reply.difference_update([jid for jid, _ in rows])
                arrived.add_rows(new, times, now)
            for jid, heard in ready:
                via_reply.discard(jid)
                if events.arrive(jid):
                    arrived[jid] = (heard, times.pop(jid, 0.0) or now) if times else (heard, now)
            if arrived.over(self.KEEP_ARRIVED_MAX, self.KEEP_ARRIVED_BYTES):
                self._evict_unwaited()

    def _offer_cancel(self, data: bytes | str | None) -> None:
        """A cancel's record (``cancel.lua``): handed over if the job is awaited here."""
        record = StatusRecord.parse(data)
        if record is not None and record.job_id in self._events:
            self._offer_id(record.job_id, data)

    def _sleep_until_traffic(self, pubsub: Any) -> None:
        """Block until the pub/sub socket has data or a watch pokes the pipe (or a second passes).

        redis-py can only wait on its socket with a timeout; a short timeout is a busy
        loop (it was 2 ms: 2% of a core per idle client) and a long one delays new
        subscriptions. So wait on the socket and the wake pipe together.
        """
        conn = pubsub.connection
        sock = getattr(conn, "_sock", None) if conn is not None else None
        if conn is not None and conn.can_read(timeout=0):
            return  # data already buffered
        with self._lock:
            if self._to_subscribe:
                return
        if sock is None or self._wake_r is None:
            # No socket to wait on (redis-py without ``_sock``): wait on redis-py's own
            # read with a short timeout, a watch then waits at most that long.
            if conn is not None:
                conn.can_read(timeout=0.05)
            return
        # selectors, not select.select: a busy server's descriptors pass 1024. One per
        # connection, not per turn: this runs for every batch of results.
        if self._selector is None or self._selected is not sock:
            self._close_selector()
            self._selector = selectors.DefaultSelector()
            self._selector.register(sock, selectors.EVENT_READ)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
            self._selected = sock
        self._selector.select(self.IDLE_BLOCK_S)
        with contextlib.suppress(OSError):  # BlockingIOError: drained
            while os.read(self._wake_r, 4096):
                pass

    def _close_selector(self) -> None:
        if self._selector is not None:
            self._selector.close()
        self._selector, self._selected = None, None

    def _prune(self, pubsub: Any) -> None:
        """Drop results kept past ``KEEP_ARRIVED_S`` and watches past ``KEEP_WATCH_S``.

        Both are kept oldest first (arrivals as they came, watches as they were made), so
        only the stale are visited: walking all of them, under the lock, took 86 ms in a
        30,000-input bulk wait (34,000 entries), every five seconds, while results waited.
        """
        now = time.monotonic()
        self._pruned_at = now
        stale: list[str] = []
        with self._lock:
            old: list[str] = []
            oldest_kept = time.time() - self.KEEP_ARRIVED_S
            for jid, (_, arrived) in self._arrived.items():
                if arrived >= oldest_kept:
                    break
                old.append(jid)
            for jid in old:
                del self._arrived[jid]
                self._events.pop(jid, None)
                self._watched_at.pop(jid, None)
            lapsed: list[str] = []
            for jid, since in self._watched_at.items():
                if now - since <= self.KEEP_WATCH_S:
                    break
                if jid not in self._arrived:
                    lapsed.append(jid)
            for jid in lapsed:
                if jid in self._via_reply:
                    self._via_reply.discard(jid)
                else:
                    stale.append(jid)
                del self._watched_at[jid]
                self._events.drop(jid)  # a waiter (if any) re-reads the key
        if stale:
            pubsub.unsubscribe(*[result_key(j) for j in stale])

    def _offer(self, channel: str, raw: bytes | str | None) -> bool:
        """Record a ready result; True when the channel is no longer needed."""
        return self._offer_id(channel.removeprefix(RESULT_KEY_PREFIX), raw)

    def _offer_id(self, jid: str, raw: bytes | str | None) -> bool:
        record = StatusRecord.parse(raw, jid)
        if record is None or not record.ready:
            return False
        with self._lock:
            self._via_reply.discard(jid)
            if not self._events.arrive(jid):
                return True
            self._arrived[jid] = (record, self._times.pop(jid, 0.0) or time.time())
            if self._arrived.over(self.KEEP_ARRIVED_MAX, self.KEEP_ARRIVED_BYTES):
                self._evict_unwaited()
        return True

    def _evict_unwaited(self) -> None:
        """Drop the oldest results nobody waits for, keeping their arrival times (lock held)."""
        for jid in self._arrived.excess(self.KEEP_ARRIVED_MAX, self.KEEP_ARRIVED_BYTES, self._waiters):
            _, arrived = self._arrived.pop(jid)
            self._events.pop(jid, None)
            self._watched_at.pop(jid, None)
            self._times[jid] = arrived
        while len(self._times) > self.KEEP_TIMES_MAX:
            self._times.popitem(last=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
