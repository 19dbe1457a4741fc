"""A submission's chunks, decided between round trips, without I/O.

Both clients send a prepared submission (``producers/prepare.py``) a chunk at a time.
For each chunk, ``ChunkPlan``:

1. names its jobs (ids from the inputs, or random ones without the cache);
2. ``read_claims``: per job id, the answer of the cache check and claim
   (``producers/claims.py``): a cached result (a finished, ``cached`` job, nothing
   sent), a job someone else queued (shared, nothing sent), a failure of the moment
   (claimed again, then sent), or a new job (sent);
3. ``message``: the one message that carries what is to be sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from producers.claims import CLAIMED, FOUND, SHARED
from producers.prepare import Prepared, Stacked
from producers.sender import Outgoing, build_message, build_tensor_message
from tasks.keys import job_id, job_ids, random_job_id
from tasks.schema import ModelInfo
from tasks.settings import Settings
from tasks.wire import StatusRecord


@dataclass
class JobSpec:
    """What one input became: its id, whether it was a cache hit or is shared, and the
    record it already has (a cache hit's)."""

    id: str
    cached: bool = False
    enqueued: bool = True
    record: StatusRecord | None = None
    arrived: float | None = None


def chunk_plans(
    settings: Settings,
    info: ModelInfo,
    prepared: Sequence[Prepared],
    chunk_size: int,
    *,
    no_cache: bool,
    deadline_ms: float | None,
    priority: str,
) -> Iterator[ChunkPlan]:
    """A bulk submission's chunks (``submit_many``, ``infer_many``), each made as it is
    about to be sent: a plan's ``t0`` is its inputs' enqueue time.

    A chunk holds at most ``chunk_size`` inputs and, past its first, at most
    ``chunk_bytes(settings)`` of them: each chunk is one step under the client's bound
    (its claim, its message and the inputs beside it in one pipeline), and 256 inputs of
    600 KB (MobileNetV2's) made a step of 154 MB, whatever the link.
    """
    limit = chunk_bytes(settings)
    rows = None
    if isinstance(prepared, Stacked):  # rows of one size: the same count for every chunk
        row_bytes = sum(a[0].nbytes for a in prepared.arrays.values()) if len(prepared) else 0
        rows = max(1, min(chunk_size, limit // max(1, row_bytes)))
    start = 0
    while start < len(prepared):
        end = start + (rows if rows is not None else _fitting(prepared, start, chunk_size, limit))
        yield ChunkPlan(
            settings,
            info,
            prepared[start:end],
            no_cache=no_cache,
            deadline_ms=deadline_ms,
            priority=priority,
        )
        start = end


def chunk_bytes(settings: Settings) -> int:
    """The most input bytes a chunk of several inputs holds: half the workers'
    ``max_message_bytes``, what one message's tensors are held to (``sender.py``)."""
    return max(1, settings.max_message_bytes // 2)


def _fitting(prepared: Sequence[Prepared], start: int, chunk_size: int, limit: int) -> int:
    """How many inputs from ``start`` make the next chunk: up to ``chunk_size``, and past
    the first only while their encoded payloads stay within ``limit`` bytes."""
    n, size = 0, 0
    for _, payload in prepared[start : start + chunk_size]:
        if n and size + len(payload) > limit:
            break
        n += 1
        size += len(payload)
    return n


class ChunkPlan:
    """One chunk of a submission (one message at most), decided between round trips."""

    def __init__(
        self,
        settings: Settings,
        info: ModelInfo,
        chunk: Sequence[Prepared],
        *,
        no_cache: bool,
        deadline_ms: float | None,
        priority: str,
    ) -> None:
        self.settings = settings
        self.info = info
        self.chunk = chunk
        self.no_cache = no_cache
        self.priority = priority
        self.t0 = time.time()
        self.deadline_at = None if deadline_ms is None else self.t0 + deadline_ms / 1e3
        if no_cache:
            # Claimed too (a random id is always free): its status reads "queued", and a
            # cancel finds it.
            self.ids = [random_job_id() for _ in range(len(chunk))]
        elif isinstance(chunk, Stacked):
            self.ids = job_ids(info.name, info.variant, info.version, chunk.arrays)
        else:
            self.ids = [job_id(info.name, info.variant, info.version, inputs) for inputs, _ in chunk]
        self.specs: list[JobSpec] = []
        #: (id, position in the chunk) of each input to send.
        self.send: list[tuple[str, int]] = []
        #: (position in specs, id, position in the chunk, the document read): failures of
        #: the moment to claim again.
        self.redo: list[tuple[int, str, int, bytes]] = []

    def fresh_answers(self) -> list[list[Any]]:
        """The claim answers for random ids (``no_cache``): every one is new."""
        return [[CLAIMED]] * len(self.chunk)

    def read_claims(self, answers: list[list[Any]]) -> None:
        """Sort the inputs by the cache check's answers (``Claims.check_and_claim``)."""
        for pos, (jid, found) in enumerate(zip(self.ids, answers, strict=True)):
            if found[0] == FOUND:
                record = StatusRecord.parse(found[1], jid)
                if record is not None and (record.cacheable or record.foreign):
                    # A record of a newer inferq is reported (IncompatibleVersion), never
                    # deleted and redone: during a rolling upgrade it is someone's result.
                    self.specs.append(
                        JobSpec(
                            jid, cached=record.cacheable, enqueued=False, record=record, arrived=time.time()
                        )
                    )
                    continue
                if record is not None and not record.ready:
                    self.specs.append(JobSpec(jid, enqueued=False))  # shared
                    continue
                # A failure of the moment is not a cache hit: run it again (if still so).
                self.redo.append((len(self.specs), jid, pos, found[1]))
                self.specs.append(JobSpec(jid))
                continue
            if found[0] == SHARED:
                self.specs.append(JobSpec(jid, enqueued=False))
                continue
            self.send.append((jid, pos))
            self.specs.append(JobSpec(jid))

    def redo_seen(self) -> list[tuple[str, bytes]]:
        """What ``Claims.reclaim`` needs: the ids to claim again and the documents read."""
        return [(jid, doc) for _, jid, _, doc in self.redo]

    def read_reclaim(self, won: list[bool]) -> None:
        for (pos, jid, at, _), claimed in zip(self.redo, won, strict=True):
            if claimed:
                self.send.append((jid, at))
            else:  # someone else ran it again meanwhile: share that run
                self.specs[pos] = JobSpec(jid, enqueued=False)

    @property
    def send_ids(self) -> list[str]:
        return [jid for jid, _ in self.send]

    @property
    def waiting_ids(self) -> list[str]:
        """Ids whose result is still to come (the listener watches them before the send)."""
        return [s.id for s in self.specs if s.record is None]

    def message(self) -> Outgoing | None:
        """The message carrying what is to be sent; None when nothing is."""
        if not self.send:
            return None
        if len(self.send) > 1:
            arrays = self._stacked()
            if arrays is not None:
                return build_tensor_message(
                    self.settings,
                    self.info,
                    [jid for jid, _ in self.send],
                    arrays,
                    self.t0,
                    cache=not self.no_cache,
                    deadline_at=self.deadline_at,
                    priority=self.priority,
                )
        return build_message(
            self.settings,
            self.info,
            [(jid, self.chunk[at][1]) for jid, at in self.send],
            self.t0,
            cache=not self.no_cache,
            deadline_at=self.deadline_at,
            priority=self.priority,
        )

    def _stacked(self) -> dict[str, np.ndarray] | None:
        """The inputs to send as one array per input name, or None when they differ in
        names, shapes or dtypes (then each travels alone, in a ``BulkMessage``)."""
        rows = [at for _, at in self.send]
        if isinstance(self.chunk, Stacked):
            whole = rows == list(range(len(self.chunk)))
            return {k: v if whole else v[rows] for k, v in self.chunk.arrays.items()}
        picked = [self.chunk[at][0] for at in rows]
        first = picked[0]
        for inputs in picked:
            if inputs.keys() != first.keys() or any(
                v.shape != first[k].shape or v.dtype != first[k].dtype for k, v in inputs.items()
            ):
                return None
        return {k: np.stack([inputs[k] for inputs in picked]) for k in first}
