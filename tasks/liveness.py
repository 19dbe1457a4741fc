"""inferq's own broker keys for who holds what and who is alive (beside kombu's layout).

kombu's ``unacked`` records say *that* a message was delivered, not *to whom*; its
visibility timeout is the only way back for a dead worker's messages. inferq's workers
also record the holder of every message they take and keep a short heartbeat lease, so
a worker that dies (SIGKILL, OOM, a lost machine) has its messages taken back within
seconds while a live worker's messages are never taken from it:

- ``HOLDERS``: hash, delivery tag -> worker id, written by ``fetch.lua`` beside kombu's
  record and removed with it (ack, put back, take-back);
- ``alive_key(worker_id)``: a key with a short TTL that a live worker renews; it exists
  exactly while the worker has renewed it within its lease (``Settings.lease_s``);
- ``LEASES`` and ``SWEEP_TURN``: which workers hold leases, and whose turn it is to sweep;
- ``leader_key(queues)``: which idle worker listens for new jobs on a set of queues
  (``workers/broker/fetcher.py``): the others sleep, so one push wakes one worker.

A message whose holder record is missing (one taken by an older worker, or by kombu)
keeps kombu's rule: the visibility timeout.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket

#: delivery tag -> id of the worker holding the message.
HOLDERS = "inferq:holders"
#: sorted set, worker id -> when its lease ends (Redis's clock): the index a sweep reads
#: to find dead workers without reading every holder record (``workers/broker/leases.py``).
LEASES = "inferq:leases"
#: Whose turn it is to sweep: a key set with ``NX`` and a TTL of one heartbeat, so that
#: one worker per interval sweeps, however many beat.
SWEEP_TURN = "inferq:sweep-turn"
_ALIVE_PREFIX = "inferq:alive:"
_LEADER_PREFIX = "inferq:leader:"
_WAKE_PREFIX = "inferq:wake:"
_SLEEPERS_PREFIX = "inferq:sleepers:"


def new_worker_id() -> str:
    """A fresh id per worker process start: a restarted worker never inherits a lease."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"


def alive_key(worker_id: str) -> str:
    """Exists while the worker renews its lease."""
    return _ALIVE_PREFIX + worker_id


def _queue_set(queues: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(set(queues))).encode()).hexdigest()[:16]


def leader_key(queues: list[str]) -> str:
    """Holds the id of the idle worker that listens for jobs on exactly these queues."""
    return _LEADER_PREFIX + _queue_set(queues)


def wake_key(queues: list[str]) -> str:
    """The list a sleeping worker blocks on; one push wakes exactly one of them."""
    return _WAKE_PREFIX + _queue_set(queues)


def sleepers_key(queues: list[str]) -> str:
    """The idle workers asleep on the wake list, scored by when each sleep ends."""
    return _SLEEPERS_PREFIX + _queue_set(queues)
