"""Wake an idle worker the moment a job is queued, without taking the job.

An idle worker must wake at once when a job is queued, but a blocking pop (``BRPOP``,
kombu's way) takes the message out of Redis before the worker has recorded it as
unacknowledged: a worker killed in that window, or whose connection dies with the
reply in flight, loses the message for good. And a blocking pop hands over the whole
message, however big. So the worker never pops while it waits; every message leaves
its list in the fetcher's atomic Lua call (``workers/broker/fetcher.py``).

The doorbell is Redis's own change feed: client-side-caching invalidations in
broadcast mode (``CLIENT TRACKING ON BCAST PREFIX <queue>``, Redis >= 6). Redis then
sends this connection the *name* of every key under those prefixes that changes (a
producer's push, another worker's pop), a few bytes each, on Redis's pub/sub channel
``__redis__:invalidate``; nothing on the server is reconfigured (Redis >= 6, which
redis-py's RESP3 needs anyway). A name of one of this worker's lists heard after the
fetcher's ``clear`` rings the bell, so a push between a fetch that found nothing and
the wait is never missed. Where tracking is refused (an ACL user without ``HELLO``,
``CLIENT ID``/``TRACKING`` or ``SUBSCRIBE`` on ``__redis__:invalidate``), the fetcher
polls instead (``POLL_S``), and says so in the log.

The cost: every change to a queue (a push, or any worker's pop) reaches every worker
serving it. Idle workers all wake on a push and race for the message in their Lua
fetches (one wins); busy ones read the feed every 50 ms. With a few workers per queue
that is noise (docs/benchmarks.md); with dozens of idle workers on one queue, each job
costs about two Lua fetches per worker, where ``BRPOP`` woke one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)

#: How often an idle fetcher looks at its queues when the doorbell cannot work.
POLL_S = 0.025
#: A silent connection is checked this often (a PING answered through pub/sub; TCP
#: keepalive probes a dead peer meanwhile). Not more often: an idle worker's commands count.
PING_S = 30.0
_CHANNEL = b"__redis__:invalidate"


def broadcast_prefixes(names: list[str]) -> list[str]:
    """The fewest prefixes covering ``names``: Redis refuses overlapping ones
    (``inferq.m.v`` covers ``inferq.m.v2`` and every priority list of both)."""
    out: list[str] = []
    for name in sorted(set(names)):
        if not out or not name.startswith(out[-1]):
            out.append(name)
    return out


class Doorbell(threading.Thread):
    """Rings when a key under one of ``prefixes`` changes in the broker."""

    def __init__(self, client: redis.Redis[bytes], lists: list[str]) -> None:
        """``lists``: every list this worker takes messages from (each priority list)."""
        super().__init__(name="inferq-doorbell", daemon=True)
        # A connection of its own from the client's pool (address, auth, TLS, timeouts).
        self._pool = client.connection_pool
        self.prefixes = broadcast_prefixes(lists)
        # A prefix covers other queues too (``inferq.m.v`` covers ``inferq.m.v2``):
        # only a change to one of ours rings.
        self._ours = {lst.encode() for lst in lists}
        self._rang = threading.Event()
        self._waiting = threading.Event()
        self._sync_asked = threading.Event()
        self._synced = threading.Event()
        self._stopping = threading.Event()
        #: False until tracking is on, and whenever the connection is down: poll then.
        self.working = False
        self._warned = False

    def clear(self) -> None:
        """Call before each fetch: any change heard from now on rings."""
        self._rang.clear()

    def sync(self, timeout: float = 0.02) -> None:
        """Read what the feed already holds before a ``clear``, so that a change made
        before now (a predecessor's pop, heard late because the feed is read every 50 ms
        while nobody waits) cannot ring after it and cost a useless fetch."""
        if not self.working:
            return
        self._synced.clear()
        self._sync_asked.set()
        self._waiting.set()  # wakes the listening loop at once
        try:
            self._synced.wait(timeout)
        finally:
            self._waiting.clear()

    def wait(self, timeout: float) -> bool:
        """Block until the bell rings (True) or ``timeout`` passes."""
        self._waiting.set()
        try:
            return self._rang.wait(timeout if self.working else min(timeout, POLL_S))
        finally:
            self._waiting.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._waiting.set()
        self._rang.set()  # a fetcher waiting on the bell stops at once

    def run(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                conn = self._pool.get_connection()
            except Exception as exc:
                backoff = min(5.0, max(0.1, backoff * 2))
                log.debug("doorbell: %s; retrying in %.1f s", exc, backoff)
                self._stopping.wait(backoff)
                continue
            try:
                self._subscribe(conn)
            except redis.ResponseError as exc:  # refused, not unreachable: poll
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "Redis refused change tracking (%s); idle workers poll every %.0f ms",
                        exc,
                        POLL_S * 1e3,
                    )
                self._give_back(conn)
                self._stopping.wait(60.0)
                continue
            except Exception as exc:  # the fetch loop reports an unreachable broker
                self._give_back(conn)
                backoff = min(5.0, max(0.1, backoff * 2))
                log.debug("doorbell: %s; retrying in %.1f s", exc, backoff)
                self._stopping.wait(backoff)
                continue
            backoff = 0.0
            self.working = True
            self._rang.set()  # whatever was pushed while it was away
            try:
                self._listen(conn)
            except Exception as exc:
                self.working = False  # the fetcher polls meanwhile
                log.debug("doorbell connection lost (%s); reconnecting", exc)
                self._give_back(conn)
                self._stopping.wait(0.1)
            else:
                self.working = False
                self._give_back(conn)

    def _give_back(self, conn: Any) -> None:
        conn.disconnect()  # never reused: it is subscribed, and tracking
        self._pool.release(conn)

    def _subscribe(self, conn: Any) -> None:
        """RESP2 on this connection (invalidations then come as plain pub/sub messages),
        tracking redirected to itself, then subscribed. redis-py's health checks are
        off here: their PING would meet pub/sub traffic (``_listen`` pings by itself)."""

        def call(*args: Any) -> Any:
            conn.send_command(*args, check_health=False)
            return conn.read_response()

        call("HELLO", "2")
        client_id = call("CLIENT", "ID")
        call(
            "CLIENT",
            "TRACKING",
            "ON",
            "REDIRECT",
            client_id,
            "BCAST",
            *[a for p in self.prefixes for a in ("PREFIX", p)],
        )
        call("SUBSCRIBE", _CHANNEL)

    def _listen(self, conn: Any) -> None:
        pinged_at = time.monotonic()
        pong_due = False
        while not self._stopping.is_set():
            # While the fetcher is busy, drain the feed every 50 ms in one go (a busy
            # queue changes thousands of times a second); while it waits, at once.
            waiting = self._waiting.wait(0.05)
            syncing = self._sync_asked.is_set()
            if conn.can_read(timeout=0.5 if waiting and not syncing else 0):
                heard = False
                while True:
                    reply = _as_bytes(conn.read_response())
                    if isinstance(reply, list) and reply and reply[0] == b"pong":
                        pong_due = False
                    elif isinstance(reply, list) and len(reply) == 3 and reply[1] == _CHANNEL:
                        keys = reply[2]  # None: the whole database was flushed
                        heard = heard or keys is None or any(k in self._ours for k in keys)
                    if not conn.can_read(timeout=0):
                        break
                if heard:
                    self._rang.set()
            if syncing:
                self._sync_asked.clear()
                self._synced.set()
            if time.monotonic() - pinged_at > PING_S:
                if pong_due:
                    raise ConnectionError(f"no answer to a PING in {PING_S:.0f} s")
                conn.send_command("PING", check_health=False)
                pinged_at, pong_due = time.monotonic(), True


def _as_bytes(reply: Any) -> Any:
    """A reply with its strings as bytes, whether or not the pool decodes responses."""
    if isinstance(reply, str):
        return reply.encode()
    if isinstance(reply, list):
        return [_as_bytes(r) for r in reply]
    return reply
