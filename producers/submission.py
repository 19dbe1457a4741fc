"""A submission's decisions, without I/O: what each input becomes, and what is sent.

The sync ``Client`` and the ``AsyncClient`` submit the same way; only how they talk to
Redis differs (a thread with a bound, or an awaited call). Everything between the
round trips lives here, once:

1. ``prepare``: inputs as named arrays, cast where no value changes, validated against
   the model's inputs, encoded, and checked against the payload limit;
2. ``ChunkPlan.read_claims``: per job id, the answer of the cache check and claim
   (``producers/claims.py``): a cached result (a finished, ``cached`` job, nothing
   sent), a job someone else queued (shared, nothing sent), a failure of the moment
   (claimed again, then sent), or a new job (sent);
3. ``ChunkPlan.message``: the one message that carries what is to be sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from producers.claims import CLAIMED, FOUND, SHARED
from producers.sender import Outgoing, build_message, build_tensor_message
from tasks import constants as C
from tasks.codec import encode_inputs
from tasks.errors import BadInput, PayloadTooLarge
from tasks.keys import job_id, job_ids, random_job_id
from tasks.schema import ModelInfo
from tasks.settings import Settings
from tasks.validation import cast_inputs, validate_inputs, validate_rows
from tasks.wire import StatusRecord

Prepared = tuple[dict[str, np.ndarray], bytes]  # (named inputs, encoded payload)


class Stacked(Sequence[Prepared]):
    """Many inputs of one model as one array per input name (row ``i`` is input ``i``),
    checked once for all: what ``prepare`` returns for a bulk submission.

    A slice is a ``Stacked`` of views (a chunk costs no copy); an item is the
    ``Prepared`` of that one input, encoded when asked for (a caller that wants a list
    of ``Prepared`` still gets one).
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._n = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Prepared: ...
    @overload
    def __getitem__(self, i: slice) -> Stacked: ...
    def __getitem__(self, i: int | slice) -> Prepared | Stacked:
        if isinstance(i, slice):
            return Stacked({k: v[i] for k, v in self.arrays.items()})
        row = self.row(i)
        return row, encode_inputs(row)

    def __iter__(self) -> Iterator[Prepared]:
        return (self[i] for i in range(self._n))

    def row(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.arrays.items()}


def _stack(
    info: ModelInfo, xs: Iterable[Any] | np.ndarray | Mapping[str, Any]
) -> dict[str, np.ndarray] | list[Any]:
    """Inputs as one array per input name when they can be (an array with a leading axis
    over inputs, a mapping of name -> such an array, or inputs that share names, shapes
    and dtypes); else the inputs as a list."""
    if isinstance(xs, np.ndarray) and len(info.inputs) == 1 and xs.ndim >= 1:
        return {info.inputs[0].name: xs} if len(xs) >= 2 else list(xs)
    if isinstance(xs, Mapping):
        columns = input_columns(xs)
        n = len(next(iter(columns.values())))
        return columns if n >= 2 else [{k: v[i] for k, v in columns.items()} for i in range(n)]
    items = list(xs)
    if len(items) < 2:
        return items
    named = [named_inputs(info, x) for x in items]
    first = named[0]
    same = all(
        n.keys() == first.keys()
        and all(v.shape == first[k].shape and v.dtype == first[k].dtype for k, v in n.items())
        for n in named
    )
    if not same or any(a.dtype.kind not in "biuf" for a in first.values()):
        return named
    return {k: np.stack([n[k] for n in named]) for k in first}


def input_columns(xs: Mapping[Any, Any]) -> dict[str, np.ndarray]:
    """Many inputs of a model given as name -> array, the leading axis over inputs (what a
    model of several inputs is sent as in bulk: ``{"a": a_rows, "b": b_rows}``), checked:
    ``BadInput`` names an input that is not an array of rows, or one whose count of rows
    differs from the first's."""
    if not xs:
        raise BadInput("expected input name -> array of inputs (one row per input), got an empty mapping")
    columns = {str(k): _as_array(v, str(k)) for k, v in xs.items()}
    (first, a), *_ = columns.items()
    for name, v in columns.items():
        if v.ndim < 1:
            raise BadInput(f"input {name!r}: expected an array with one row per input, got a scalar")
        if v.dtype.kind not in "biuf":
            raise BadInput(f"input {name!r}: expected an array of numbers, got dtype {v.dtype}")
        if len(v) != len(a):
            raise BadInput(
                f"input {name!r}: {len(v)} rows, but input {first!r} has {len(a)}: one row per input"
            )
    return columns


def _as_array(x: Any, name: str) -> np.ndarray:
    """An input as an array; a ragged nested list is ``BadInput``, never numpy's ValueError."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"input {name!r}: expected a rectangular array of numbers ({exc})") from None


def named_inputs(info: ModelInfo, x: Any) -> dict[str, np.ndarray]:
    """One input (array) or named inputs (mapping) as a name -> array dict."""
    if isinstance(x, Mapping):
        return {str(k): _as_array(v, str(k)) for k, v in x.items()}
    if len(info.inputs) != 1:
        raise BadInput(f"{info.key} has inputs {[s.name for s in info.inputs]}; pass a dict of name -> array")
    return {info.inputs[0].name: _as_array(x, info.inputs[0].name)}


def check_options(chunk_size: int, priority: str, deadline_ms: Any = None) -> None:
    """A submission's options, checked before any I/O (``BadInput`` naming the option)."""
    if chunk_size < 1:
        raise BadInput(f"chunk_size must be >= 1, got {chunk_size}")
    if priority not in C.PRIORITIES:
        raise BadInput(f"priority must be one of {sorted(C.PRIORITIES)}, got {priority!r}")
    if deadline_ms is not None:
        # A bool is an int to Python, and a string would fail only later, as a TypeError
        # deep in building the message; 0 or less would expire every job unseen.
        number = isinstance(deadline_ms, (int, float, np.integer, np.floating)) and not isinstance(
            deadline_ms, bool
        )
        if not number or not math.isfinite(deadline_ms) or deadline_ms <= 0:
            raise BadInput(
                f"deadline_ms must be a number of milliseconds > 0 (or None: no deadline), got {deadline_ms!r}"
            )


def prepare(settings: Settings, info: ModelInfo, xs: Iterable[Any], *, validate: bool) -> Sequence[Prepared]:
    """Every input checked and encoded before anything is sent (one bad input sends nothing).

    Inputs are cast to the model's dtypes where no value changes; a lossy cast raises
    ``BadInput`` naming the expected dtype. ``validate=False`` sends each input exactly
    as given (the worker checks it). Many inputs that share names, shapes and dtypes
    come back ``Stacked``: cast, checked and later sent as one array per input name.
    """
    stacked = _stack(info, xs)
    if isinstance(stacked, dict):
        return _prepare_stacked(settings, info, stacked, validate=validate)
    prepared: list[Prepared] = []
    for x in stacked:
        inputs = named_inputs(info, x)
        if validate:
            inputs = validate_inputs(cast_inputs(inputs, info.inputs), info.inputs)
        payload = encode_inputs(inputs)
        if len(payload) > settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"input payload is {len(payload)} bytes, over the limit of {settings.max_payload_bytes} bytes"
            )
        prepared.append((inputs, payload))
    return prepared


def _prepare_stacked(
    settings: Settings, info: ModelInfo, arrays: dict[str, np.ndarray], *, validate: bool
) -> Stacked:
    if validate:
        arrays, bad = validate_rows(cast_inputs(arrays, info.inputs), info.inputs)
        if bad:
            first = min(bad)
            raise BadInput(f"{bad[first].message} (input {first} of {len(next(iter(arrays.values())))})")
    out = Stacked(arrays)
    size = len(encode_inputs(out.row(0)))  # every row encodes to the same size
    if size > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"input payload is {size} bytes, over the limit of {settings.max_payload_bytes} bytes"
        )
    return out


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
    about to be sent: a plan's ``t0`` is its inputs' enqueue time."""
    for start in range(0, len(prepared), chunk_size):
        yield ChunkPlan(
            settings,
            info,
            prepared[start : start + chunk_size],
            no_cache=no_cache,
            deadline_ms=deadline_ms,
            priority=priority,
        )


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
