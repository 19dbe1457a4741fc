"""Write job states to the result backend (which doubles as the cache), a batch at a time.

The records are ``tasks/wire/``'s ``StatusRecord``: what Celery's Redis backend would
write, so any Celery client can poll them with ``AsyncResult``; but a whole batch goes
out in one Lua call (one round trip, ``tasks/lua/store.lua``) instead of one ``SETEX``
+ ``PUBLISH`` per job. Each record is published under its own key (whoever watches the
job: producers sharing it, ``AsyncResult``, older clients) and, for a job whose message
named an inferq reply channel (``reply_to``), in that client's one ``ReplyBatch`` for
the batch: one pub/sub message per client per batch, its successes as columns when the
client reads them (``encode_columns``, packed by the caller, passed through unread).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from tasks import lua
from tasks.constants import INFLIGHT_KEY_PREFIX, RESULT_KEY_PREFIX
from tasks.errors import InferqError
from tasks.keys import result_key
from tasks.wire import REPLY_COLUMNS_VERSION, REPLY_VERSION, StatusRecord


@dataclass(frozen=True)
class Outcome:
    """One job's end: a result document or an error."""

    job_id: str
    result: dict[str, Any] | None = None
    error: InferqError | None = None
    key: str = "unknown"  # model:variant, for metrics
    reply_to: str | None = None  # the sender's reply channel (``envelope.read_message``)

    def record(self) -> StatusRecord:
        if self.error is None:
            assert self.result is not None
            return StatusRecord.success(self.job_id, self.result)
        return StatusRecord.failure(self.job_id, self.error)


#: A stored record that is a revocation (a cancel): the first bytes, as
#: ``tasks/lua/revoked.lua`` reads them for ``store.lua`` (a test holds the two readers to
#: agreeing); ``ResultWriter.cancelled`` reads them here.
_REVOKED = re.compile(rb'^\s*{\s*"status"\s*:\s*"REVOKED"')


#: Keys per ``MGET`` of ``ResultWriter.cancelled`` (as ``slices.lua`` reads them).
CANCEL_READ = 1000


class ResultWriter:
    """Stores outcomes (and ``STARTED`` marks) with one round trip per call."""

    def __init__(self, client: redis.Redis[bytes], ttl_s: int, started_ttl_s: int | None = None) -> None:
        self.client = client
        self.ttl_s = ttl_s
        #: A ``STARTED`` state is not a result: if the job's message were lost, a state
        #: that lived as long as the cache would make every resubmission wait for it.
        self.started_ttl_s = min(ttl_s, started_ttl_s or ttl_s)
        self._store = client.register_script(lua.source("revoked", "slices", "store"))
        self._started = client.register_script(lua.source("revoked", "mark_started"))

    def cancelled(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs were cancelled: their records read with one ``MGET`` per
        ``CANCEL_READ`` jobs, in one round trip, each looked at by its first bytes.

        Not a script: nothing here needs to be atomic (``store.lua`` checks again as it
        stores), and a script's Redis time was 0.41 µs per job against 0.02 for the
        ``MGET`` (``INFO commandstats``, 256 ids): Redis's Lua hashes every byte of the
        ids and keys it is given and builds (``benchmarks/lua_costs.py``). A job's key is
        nearly always empty here (or holds a cancel's or a ``STARTED`` record, both small).
        """
        if not job_ids:
            return set()
        keys = [result_key(j) for j in job_ids]
        if len(keys) <= CANCEL_READ:
            raws: list[bytes | None] = self.client.mget(keys)
        else:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(keys), CANCEL_READ):
                pipe.mget(keys[start : start + CANCEL_READ])
            raws = [raw for part in pipe.execute() for raw in part]
        return {jid for jid, raw in zip(job_ids, raws, strict=True) if raw and _REVOKED.match(raw[:64])}

    def started(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if ids:
            self._started(
                keys=[result_key(j) for j in ids],
                args=[self.started_ttl_s, *(StatusRecord.started(j).encode() for j in ids)],
            )

    def store(self, outcomes: Iterable[Outcome]) -> None:
        outcomes = list(outcomes)
        if outcomes:
            self.store_encoded(
                [o.job_id for o in outcomes],
                [o.record().encode() for o in outcomes],
                [o.reply_to for o in outcomes],
            )

    def store_encoded(
        self,
        job_ids: list[str],
        records: list[bytes],
        replies: Sequence[str | None] | None = None,
        columns: Mapping[str, bytes] | None = None,
    ) -> None:
        """Store encoded status records (``StatusRecord.encode``, or ``encode_successes``
        for a batch), one per job, in one Lua call; ``replies``: each job's reply channel
        (None: none), each channel sent one ``ReplyBatch`` of its jobs' records, or
        ``columns[channel]`` (a version 2 batch, ``encode_columns``) where given."""
        if not job_ids:
            return
        if len(records) != len(job_ids):
            # store.lua finds the reply arguments after the records by the ids' count: a
            # record too many or too few would be read as one of them, silently.
            raise ValueError(f"{len(records)} records for {len(job_ids)} job ids")
        # Ids and channel numbers as one argument each, the records one argument per
        # record (store.lua says why).
        args: list[int | str | bytes] = [
            self.ttl_s,
            msgpack.packb(job_ids),
            RESULT_KEY_PREFIX,
            INFLIGHT_KEY_PREFIX,
        ]
        args += records
        if replies is not None and any(replies):
            channels: dict[str, int] = {}
            numbers = [0 if r is None else channels.setdefault(r, len(channels) + 1) for r in replies]
            if columns:
                args += [REPLY_COLUMNS_VERSION, msgpack.packb(numbers)]
                for channel in channels:
                    args += [channel, columns.get(channel, b"")]
            else:
                args += [REPLY_VERSION, msgpack.packb(numbers), *channels]
        self._store(keys=[], args=args)
