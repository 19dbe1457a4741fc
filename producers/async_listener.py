"""The ``AsyncClient``'s result listener: one pub/sub connection and one task per client.

The same contract as the sync ``ResultListener`` (``producers/listener.py``), on the
event loop instead of a thread: every job is watched from the moment it is submitted,
so its result is seen, and its end-to-end time stamped, within a round trip of being
stored, however late anyone awaits it. Thousands of awaiting coroutines share the one
subscription connection; each waits on a future, woken by a message, never by polling.

A job this client sends names the client's reply channel (``reply_to``), subscribed
once per connection: its record arrives in the worker's one ``ReplyBatch`` per batch
for this client, with no subscription of its own. Any other job (shared, a handle's) is
subscribed on its own channel; cancels arrive on ``CANCEL_CHANNEL``.

No result is missed: a job is sent once the reply channel is confirmed (at once on a
connection that has it); once Redis confirms a job's own subscription, the listener
reads its key once (one ``MGET`` for all confirmations of a turn). When the connection
drops, the task reconnects with backoff, subscribes again (the reply channel, every
job still awaited on its own), and once confirmed reads the keys of every job still
awaited: what was stored meanwhile is found. Resources stay bounded as in the sync
listener: results nobody awaits are kept only among the newest ``KEEP_ARRIVED_MAX`` and
``KEEP_ARRIVED_BYTES`` (a later ``wait`` reads them again, their arrival time kept), and
watches nobody awaits lapse after ``KEEP_WATCH_S``. A reply batch's records are kept as
they came and read when taken (``producers/heard.py``), as in the sync listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis
import redis.asyncio

from producers.heard import (
    Heard,
    HeardArrival,
    Row,
    batch_items,
    final_raw,
    oldest_to_drop,
    record_of,
    size_of,
)
from producers.listener import READ_CHUNK, Arrival, ResultListener, new_reply_channel
from tasks.constants import CANCEL_CHANNEL, RESULT_KEY_PREFIX
from tasks.errors import ConfigError, InferqError, Timeout
from tasks.keys import result_key
from tasks.wire import ReplyBatch, StatusRecord

log = logging.getLogger(__name__)


#: ``collect`` hands this many results already here to ``each`` per turn of the loop.
EACH_SLICE = 16


class AsyncResultListener:
    """Watches job ids on one pub/sub connection; ``wait`` awaits their results."""

    KEEP_ARRIVED_S = 300.0
    KEEP_WATCH_S = 3600.0
    KEEP_ARRIVED_MAX = ResultListener.KEEP_ARRIVED_MAX
    KEEP_ARRIVED_BYTES = ResultListener.KEEP_ARRIVED_BYTES
    KEEP_TIMES_MAX = 20_000
    #: Longest one read of the subscription waits before the task looks round (prunes).
    IDLE_READ_S = 1.0
    #: Messages handled (and waiters woken) per turn of the event loop: a burst of a
    #: thousand results is handed out over many turns, each well under a millisecond,
    #: instead of one turn that holds every other coroutine back.
    SLICE = 32
    #: How long a send waits for the reply channel's subscription to be confirmed (only
    #: while the listener (re)connects); past it the job is sent anyway, and its key read
    #: once the subscription is confirmed.
    CONFIRM_WAIT_S = 0.5
    #: A job awaited on the reply channel this long while nothing came on it is watched
    #: on its own channel too (``ResultListener.REPLY_SILENCE_S``: an older worker).
    REPLY_SILENCE_S = 5.0

    def __init__(self, client: redis.asyncio.Redis[bytes]) -> None:
        self._client = client
        self._futures: dict[str, asyncio.Future[HeardArrival]] = {}
        self._watched_at: dict[str, float] = {}
        #: Settled futures, oldest first, with the bytes each holds (``_done_bytes`` in all).
        self._done_order: OrderedDict[str, int] = OrderedDict()
        self._done_bytes = 0
        self._waiters: dict[str, int] = {}
        self._times: OrderedDict[str, float] = OrderedDict()
        self._pubsub: Any = None
        self._lock = asyncio.Lock()  # one writer of subscription commands at a time
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._resubscribe = False
        self._error: BaseException | None = None
        self._closed = False
        self._pruned_at = time.monotonic()
        #: The reply channel, confirmed or not on the current connection, the ids awaited
        #: on it, and those whose senders wait for the confirmation (no read needed).
        self._reply = new_reply_channel()
        self._reply_ready = asyncio.Event()
        self._via_reply: set[str] = set()
        self._unsent: set[str] = set()
        self._reply_heard_at = time.monotonic()
        self._silence_checked_at = 0.0

    @property
    def reply_channel(self) -> str:
        """The channel to name in the ``reply_to`` of the jobs this client sends."""
        return self._reply

    # --- the callers' side ----------------------------------------------------------

    async def watch(self, job_ids: Iterable[str], sending: Iterable[str] = ()) -> None:
        """Start watching ids (before their jobs are sent). Never raises for Redis: a
        subscription that cannot be sent now is sent when the connection is back.

        ``sending``: the ids the caller sends itself, naming ``reply_channel``: awaited
        there, with no subscription of their own; this returns once the reply channel is
        confirmed (at once on a connection that has it; past ``CONFIRM_WAIT_S`` they are
        read once it is)."""
        self._ensure_task()
        mine = set(sending)
        new: list[str] = []
        replied: list[str] = []
        for jid in job_ids:
            fut = self._futures.get(jid)
            # A future failed with the listener is watched afresh (by a new task): Redis may
            # take the subscription now (the ACL fixed), and the result may be there.
            if fut is None or (fut.done() and fut.exception() is not None):
                self._futures[jid] = asyncio.get_running_loop().create_future()
                self._watched_at[jid] = time.monotonic()
                if jid in mine:
                    self._via_reply.add(jid)
                    replied.append(jid)
                else:
                    self._via_reply.discard(jid)
                    new.append(jid)
        if new:
            await self._subscribe_own(new)
        if replied and not self._reply_ready.is_set():
            self._unsent.update(replied)
            try:
                async with asyncio.timeout(self.CONFIRM_WAIT_S):
                    await self._reply_ready.wait()
            except TimeoutError:
                log.debug("the reply channel is not confirmed yet; %d job(s) read once it is", len(replied))
            finally:
                self._unsent.difference_update(replied)

    async def _subscribe_own(self, new: list[str]) -> None:
        try:
            async with self._lock:
                if self._pubsub is None or self._resubscribe:
                    self._resubscribe = True  # the task subscribes every pending id on reconnect
                    return
                await self._pubsub.subscribe(*[result_key(j) for j in new])
            self._subscribed.set()
        except (redis.RedisError, OSError) as exc:
            log.debug("subscribing failed (%s); the listener subscribes again on reconnect", exc)
            self._resubscribe = True
        except BaseException:
            # Cancelled before the subscription went out (waiting for the lock, or mid-send):
            # the ids are registered, so no later watch subscribes them; the task does.
            self._resubscribe = True
            raise

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop what arrived for these ids (they are about to run again), unless someone
        is awaiting it right now."""
        for jid in job_ids:
            fut = self._futures.get(jid)
            if fut is not None and fut.done() and jid not in self._waiters:
                self._drop(jid)
            self._times.pop(jid, None)

    async def wait(
        self, job_ids: Iterable[str], timeout: float | None, progress: Callable[[int], None] | None = None
    ) -> dict[str, Arrival]:
        """Await every id's ready record; ``Timeout`` naming how many did not arrive."""
        heard = await self.collect(job_ids, timeout, progress)
        return {jid: (record_of(h, jid), at) for jid, (h, at) in heard.items()}

    async def collect(
        self,
        job_ids: Iterable[str],
        timeout: float | None,
        progress: Callable[[int], None] | None = None,
        each: Callable[[str, HeardArrival], None] | None = None,
    ) -> dict[str, HeardArrival]:
        """``wait``, with each record as it was heard: a reply batch's still as it came
        (``producers/heard.py`` reads them; ``wait_all`` straight into ``Result``s).

        ``each(job_id, arrival)`` is called from the loop as each arrives (at once for
        those already here), so a caller reads results while the rest are coming, not
        all after the last one (as ``ResultListener.collect``)."""
        ids = list(dict.fromkeys(job_ids))
        hooked: list[tuple[asyncio.Future[HeardArrival], Callable[[asyncio.Future[HeardArrival]], None]]] = []
        # Counted as waited for before the watch: results arriving while it subscribes
        # must not evict (or prune) the ones this wait already has.
        for jid in ids:
            self._waiters[jid] = self._waiters.get(jid, 0) + 1
        try:
            # As the sync listener: for a bulk wait, any id not watched here is read first
            # (one MGET per READ_CHUNK), and only those not stored yet are watched.
            bulk = len(ids) > 1
            evicted = [j for j in ids if j not in self._futures and (bulk or j in self._times)]
            if evicted:
                await self._reread(evicted, timeout)
            await self.watch(ids)
            futures = {jid: self._futures[jid] for jid in ids}
            pending = {f for f in futures.values() if not f.done()}
            if each is not None:
                read = 0
                for jid, fut in futures.items():
                    if fut in pending:
                        hook = _each_hook(jid, each)
                        fut.add_done_callback(hook)
                        hooked.append((fut, hook))
                    elif fut.exception() is None:
                        each(jid, fut.result())
                        read += 1
                        if read % EACH_SLICE == 0:
                            await asyncio.sleep(0)  # reading a thousand results is not one step
            if progress is not None:
                progress(len(ids) - len(pending))
                for f in pending:  # one call per arrival, from the loop, in any order
                    f.add_done_callback(lambda _f: progress(1))
            if pending:
                # One wait for all (never one per arrival: re-waiting on the rest after
                # each arrival is quadratic in the number of jobs).
                _, pending = await asyncio.wait(pending, timeout=timeout)
            if pending:
                if self._error is not None:
                    raise Timeout(f"result listener failed: {self._error}")
                raise Timeout(f"timed out after {timeout} s waiting for {len(pending)} of {len(ids)} job(s)")
            out: dict[str, HeardArrival] = {}
            for jid, fut in futures.items():
                exc = fut.exception()
                if exc is not None:
                    raise exc
                out[jid] = fut.result()
            return out
        finally:
            for fut, hook in hooked:
                fut.remove_done_callback(hook)  # a wait given up hears no more
            held = self._futures
            for jid in ids:
                self._waiters[jid] -= 1
                if self._waiters[jid] == 0:
                    del self._waiters[jid]
                    settled = held.get(jid)
                    if settled is not None and settled.done():
                        self._drop(jid)  # the last reader forgets it, as in the sync listener

    async def _reread(self, ids: list[str], timeout: float | None) -> None:
        """Ids whose results are not held here (arrivals not kept: ``KEEP_ARRIVED_MAX``, a
        bulk submission's arrive while it is still sending; or a bulk wait's ids not
        watched here), read (``READ_CHUNK`` keys per ``MGET``) instead of watched anew;
        any not found ready are watched as usual."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                for at in range(0, len(ids), READ_CHUNK):
                    chunk = ids[at : at + READ_CHUNK]
                    raws = await self._client.mget([result_key(j) for j in chunk])
                    for jid, raw in zip(chunk, raws, strict=True):
                        record = StatusRecord.parse(raw, jid)
                        if jid in self._futures or record is None or not record.ready:
                            continue
                        fut = loop.create_future()
                        fut.set_result((record, self._times.pop(jid, 0.0) or time.time()))
                        self._futures[jid] = fut
                        self._mark_done(jid, size_of(record))
        except (redis.RedisError, OSError, TimeoutError) as exc:
            log.debug("reading %d earlier result(s) again failed (%s); watching them", len(ids), exc)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_pubsub()
        self._reply_ready.set()  # a sender waiting for it sends, and meets the closed client
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(Timeout("the client was closed while waiting"))
                fut.exception()  # retrieved: no "never retrieved" warning

    # --- the listener task ----------------------------------------------------------

    def _ensure_task(self) -> None:
        if self._closed:
            raise Timeout("the client is closed")
        if self._task is None or self._task.done():
            self._error = None
            self._task = asyncio.get_running_loop().create_task(self._run(), name="inferq-results")

    async def _run(self) -> None:
        delay = 0.1
        while not self._closed:
            began = time.monotonic()
            try:
                await self._connect()
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (
                redis.AuthenticationError,
                redis.exceptions.AuthorizationError,
                redis.exceptions.NoPermissionError,  # an ACL without the result channels
            ) as exc:
                self._fail(ConfigError(f"the result listener was refused by Redis: {exc}"))
                return
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if time.monotonic() - began > 30:
                    delay = 0.1  # a new outage, not the same one continuing
                log.warning("result listener lost Redis (%s); reconnecting in %.1f s", exc, delay)
                self._reply_ready.clear()
                await self._close_pubsub()
                self._resubscribe = True
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
            except Exception as exc:  # surfaced to the waiters instead of dying silently
                failed = exc if isinstance(exc, InferqError) else Timeout(f"result listener failed: {exc}")
                self._fail(failed)
                return

    async def _connect(self) -> None:
        async with self._lock:
            fresh = self._pubsub is None
            if fresh:
                self._reply_ready.clear()
                self._pubsub = self._client.pubsub()
                self._resubscribe = True
            if self._resubscribe:
                # Cleared before the ids are taken: one asked for meanwhile is not lost.
                self._resubscribe = False
                ids = [j for j, f in self._futures.items() if not f.done() and j not in self._via_reply]
                channels = [result_key(j) for j in ids]
                if fresh:
                    channels[:0] = [self._reply, CANCEL_CHANNEL]
                if channels:
                    await self._pubsub.subscribe(*channels)
                    self._subscribed.set()

    async def _listen(self) -> None:
        pubsub = self._pubsub
        while not self._closed:
            if not pubsub.subscribed:
                self._subscribed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.IDLE_READ_S):
                        await self._subscribed.wait()
                await self._maybe_prune()
                if self._resubscribe:
                    return  # reconnect path: _connect subscribes every pending id
                continue
            confirmed: list[str] = []
            finished: list[str] = []
            to_read: list[str] = []  # ids whose keys are read: a reconnect, a batch in another version
            msg = await pubsub.get_message(timeout=self.IDLE_READ_S)
            handled = 0
            reply = self._reply
            while msg is not None:
                channel = _text(msg["channel"])
                kind = msg["type"]
                if kind == "message":
                    if channel == reply:
                        to_read += await self._offer_batch(msg.get("data"))
                    elif channel == CANCEL_CHANNEL:
                        self._offer_cancel(msg.get("data"))
                    elif self._offer(channel, msg.get("data")):
                        finished.append(channel)
                elif kind == "subscribe":
                    if channel == reply:
                        self._reply_heard_at = time.monotonic()
                        # Senders waiting for it send now (no read needed); every other job
                        # awaited on it is read, for what was stored while unsubscribed.
                        to_read += [j for j in self._via_reply if j not in self._unsent and self._awaited(j)]
                        self._reply_ready.set()
                    elif channel != CANCEL_CHANNEL:
                        confirmed.append(channel)
                handled += 1
                if handled % self.SLICE == 0:
                    await asyncio.sleep(0)  # a burst of results must not hold the loop
                msg = await pubsub.get_message(timeout=0)
            own = len(confirmed)  # channels subscribed per id: unsubscribed once answered
            confirmed += [result_key(j) for j in to_read]
            for at in range(0, len(confirmed), READ_CHUNK):
                chunk = confirmed[at : at + READ_CHUNK]
                for i, (channel, raw) in enumerate(
                    zip(chunk, await self._client.mget(chunk), strict=True), 1
                ):
                    if self._offer(channel, raw) and at + i <= own:
                        finished.append(channel)
                    if i % self.SLICE == 0:
                        await asyncio.sleep(0)
            if finished:  # one command for all of this turn's results
                async with self._lock:
                    # Not a channel watched again meanwhile (its job run again): that
                    # SUBSCRIBE went out first, and this UNSUBSCRIBE would undo it.
                    finished = [c for c in finished if self._unneeded(c)]
                    if finished:
                        await pubsub.unsubscribe(*finished)
            await self._maybe_prune()
            if self._resubscribe:
                return

    async def _close_pubsub(self) -> None:
        async with self._lock:
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _fail(self, exc: InferqError) -> None:
        self._error = exc
        for jid, fut in self._futures.items():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
                self._mark_done(jid, 0)  # bounded as unawaited results are

    async def _offer_batch(self, data: bytes | str | None) -> list[str]:
        """A ``ReplyBatch``: each record for a job awaited here handed over (``SLICE`` per
        turn of the loop). Returns the ids to read instead: a batch in another version
        names them (or, unreadable, every job awaited on the reply channel)."""
        self._reply_heard_at = time.monotonic()
        batch = ReplyBatch.decode(data if isinstance(data, bytes) else None)
        if not batch.readable:
            log.warning("a reply batch in version %s; reading its jobs' keys instead", batch.version)
            ids = batch.ids or list(self._via_reply)
            return [j for j in ids if self._awaited(j)]
        futures, parse, now = self._futures, StatusRecord.parse, time.time()
        for n, (jid, raw) in enumerate(batch_items(batch), 1):
            fut = futures.get(jid)
            if fut is None or fut.done():  # nobody here awaits it (any longer)
                continue
            # A final record (or a version 2 batch's ``Row``) is kept as it came, read
            # when taken (``heard.py``).
            heard: Heard | None = raw if isinstance(raw, Row) else final_raw(raw)
            if heard is None:
                record = parse(raw, jid)  # type: ignore[arg-type]  # not a Row: final_raw's None
                if record is None or not record.ready:
                    continue
                heard = record
            self._via_reply.discard(jid)
            fut.set_result((heard, self._times.pop(jid, 0.0) or now))
            self._mark_done(jid, size_of(heard))
            if n % (4 * self.SLICE) == 0:
                await asyncio.sleep(0)
        if self._over():
            self._evict_unwaited()
        return []

    def _offer_cancel(self, data: bytes | str | None) -> None:
        """A cancel's record (``cancel.lua``): handed over if the job is awaited here."""
        record = StatusRecord.parse(data)
        if record is not None and record.job_id in self._futures:
            self._offer(result_key(record.job_id), data)

    def _offer(self, channel: str, raw: bytes | str | None) -> bool:
        """Record a ready result; True when the channel is no longer needed."""
        jid = channel.removeprefix(RESULT_KEY_PREFIX)
        record = StatusRecord.parse(raw, jid)
        if record is None or not record.ready:
            return False
        self._via_reply.discard(jid)
        fut = self._futures.get(jid)
        if fut is None or fut.done():
            return True
        fut.set_result((record, self._times.pop(jid, 0.0) or time.time()))
        self._mark_done(jid, size_of(record))
        if self._over():
            self._evict_unwaited()
        return True

    def _awaited(self, jid: str) -> bool:
        fut = self._futures.get(jid)
        return fut is not None and not fut.done()

    def _mark_done(self, jid: str, size: int) -> None:
        """A future settled, holding ``size`` bytes. Bounded (``KEEP_ARRIVED_MAX``,
        ``KEEP_ARRIVED_BYTES``) only while nobody awaits it: an awaited one is the
        waiter's, dropped when it is read (a bulk wait's, counted, filled the bound with
        what could not be evicted, and every batch scanned them all again)."""
        if jid in self._waiters:
            return
        self._done_bytes += size - self._done_order.get(jid, 0)
        self._done_order[jid] = size

    def _over(self) -> bool:
        return len(self._done_order) > self.KEEP_ARRIVED_MAX or self._done_bytes > self.KEEP_ARRIVED_BYTES

    def _drop(self, jid: str) -> None:
        self._via_reply.discard(jid)
        self._futures.pop(jid, None)
        self._watched_at.pop(jid, None)
        self._done_bytes -= self._done_order.pop(jid, 0)

    def _evict_unwaited(self) -> None:
        """Drop the oldest results nobody awaits, keeping their arrival times."""
        victims = oldest_to_drop(
            self._done_order.items(),
            len(self._done_order) - self.KEEP_ARRIVED_MAX,
            self._done_bytes - self.KEEP_ARRIVED_BYTES,
            self._waiters,
        )
        for jid in victims:
            fut = self._futures.get(jid)
            if fut is not None and fut.done() and fut.exception() is None:
                self._times[jid] = fut.result()[1]
            self._drop(jid)
        while len(self._times) > self.KEEP_TIMES_MAX:
            self._times.popitem(last=False)

    async def _check_silence(self) -> None:
        """Jobs awaited on a reply channel silent for ``REPLY_SILENCE_S``: subscribed on their
        own channels too (their keys read once confirmed)."""
        now = time.monotonic()
        if not self._via_reply or now - self._silence_checked_at < 1.0:
            return
        self._silence_checked_at = now
        if now - self._reply_heard_at < self.REPLY_SILENCE_S:
            return
        late = [
            j
            for j in self._via_reply
            if now - self._watched_at.get(j, now) > self.REPLY_SILENCE_S and self._awaited(j)
        ]
        if late:
            log.info("%d job(s) heard nothing on the reply channel for %.0f s; watching their own channels",
                     len(late), self.REPLY_SILENCE_S)  # fmt: skip
            self._via_reply.difference_update(late)
            await self._subscribe_own(late)

    async def _maybe_prune(self) -> None:
        await self._check_silence()
        now = time.monotonic()
        if now - self._pruned_at < 5.0:
            return
        self._pruned_at = now
        # Both are kept oldest first, so only the stale are visited (as the sync
        # listener's ``_prune``): walking all of them blocked the loop for tens of ms
        # every five seconds during a bulk wait.
        oldest_kept = time.time() - self.KEEP_ARRIVED_S
        old: list[str] = []
        for jid in self._done_order:
            fut = self._futures.get(jid)
            if fut is None or jid in self._waiters or fut.exception() is not None:
                continue
            if fut.result()[1] >= oldest_kept:
                break
            old.append(jid)
        for jid in old:
            self._drop(jid)
        stale: list[str] = []
        lapsed: list[str] = []
        for jid, since in self._watched_at.items():
            if now - since <= self.KEEP_WATCH_S:
                break
            fut = self._futures.get(jid)
            if fut is not None and not fut.done() and jid not in self._waiters:
                lapsed.append(jid)
        for jid in lapsed:
            if jid not in self._via_reply:
                stale.append(result_key(jid))
            self._drop(jid)  # a later wait watches it anew (and reads the key)
        if stale and self._pubsub is not None:
            async with self._lock:
                stale = [c for c in stale if self._unneeded(c)]
                if stale:
                    await self._pubsub.unsubscribe(*stale)

    def _unneeded(self, channel: str) -> bool:
        """Whether no result is awaited on ``channel`` now."""
        fut = self._futures.get(channel.removeprefix(RESULT_KEY_PREFIX))
        return fut is None or fut.done()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _each_hook(
    jid: str, each: Callable[[str, HeardArrival], None]
) -> Callable[[asyncio.Future[HeardArrival]], None]:
    """A done-callback handing ``jid``'s arrival to ``each`` (not a failed future's: the
    wait raises that)."""

    def hook(fut: asyncio.Future[HeardArrival]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            each(jid, fut.result())

    return hook
