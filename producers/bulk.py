"""Many inputs in, stacked outputs out: ``Client.infer_many`` and ``AsyncClient.infer_many``.

Why besides ``submit_many`` + ``wait_all``: a caller holding one array of inputs usually
wants one array of outputs back, and a ``Job``, a ``Result`` and a ``Timing`` per input,
only to be stacked again, cost the client their making and the full garbage collections
that walk them while the caller holds them. Here a reply block's rows are copied
straight into the output arrays, a run of one block's rows at a time, and each input's
timing is a row of a few float arrays (30,000 digits inputs: the client's CPU per input
10-21% lower, its collector's time about halved; docs/benchmarks.md "Ninth session").
Every input keeps its own job id and cache entry, exactly as ``submit_many`` sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from producers.heard import Heard, HeardArrival, Row, result_from
from producers.plans import ChunkPlan
from tasks.errors import BadInput, IncompatibleVersion, InferqError
from tasks.schema import ModelInfo
from tasks.wire import ReplyBlock, Result

#: The per-input timing ``BulkResult.timing`` holds, as ``Timing``'s fields of the same names.
TIMING_FIELDS = ("queue_ms", "batch_wait_ms", "compute_ms", "processing_ms", "end_to_end_ms", "batch_size")
#: Those the computing worker stamped (``end_to_end_ms`` is the caller's own).
_FROM_WORKER = ("queue_ms", "batch_wait_ms", "compute_ms", "processing_ms", "batch_size")


@dataclass(frozen=True)
class BulkResult:
    """Row ``i`` of every array is input ``i``'s.

    ``errors`` holds the inputs that failed, by row: their outputs are zeros and their
    timing NaN. ``cached`` is True where the result came from the cache for this call.
    """

    model: str
    variant: str
    job_ids: list[str]
    outputs: dict[str, np.ndarray]
    #: name (``TIMING_FIELDS``) -> float64 array, ms (``batch_size``: the batch it ran in).
    timing: dict[str, np.ndarray]
    cached: np.ndarray
    errors: dict[int, InferqError] = field(default_factory=dict)
    #: The model versions that answered, in the order first seen (one, unless it changed).
    versions: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.job_ids)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise the first failed input's error (its row named), if any failed."""
        if self.errors:
            row = min(self.errors)
            exc = self.errors[row]
            raise type(exc)(f"input {row} of {len(self)} ({len(self.errors)} failed): {exc}") from exc


class Gather:
    """Fills a ``BulkResult`` as each input's record arrives.

    Plans are added as they are sent (their cache hits settled at once); ``settle`` takes
    each arrival the listener hands over, on the waiting thread or loop (a reply block's
    rows are copied a run at a time: ``_flush``, at the latest by ``result``). ``progress(k)``
    is told of rows answered (``report``): the listener counts ids, and a repeated input
    is one id for several rows."""

    def __init__(
        self,
        model: str,
        variant: str,
        n: int,
        progress: Callable[[int], None] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> None:
        self.model = model
        self.variant = variant
        self.n = n
        #: The outputs kept (None: all); the others are neither copied nor compared.
        self.wanted = None if outputs is None else frozenset(outputs)
        self.job_ids: list[str] = []
        #: id -> its row; an id given more than once in the call (the same input twice)
        #: keeps its further rows in ``more``.
        self.rows: dict[str, int] = {}
        self.more: dict[str, list[int]] = {}
        #: The ids to wait for, each once, in order.
        self.pending: dict[str, None] = {}
        self._fitted: object = None  # the reply block whose rows were last found to fit
        self._progress = progress
        self._done = 0  # rows answered (a result or an error) since ``report`` last told
        self.outputs: dict[str, np.ndarray] = {}
        self.timing = {name: np.full(n, np.nan) for name in TIMING_FIELDS}
        self.asked_at = np.zeros(n)
        self.arrived_at = np.full(n, np.nan)
        self.cached = np.zeros(n, dtype=bool)
        self.errors: dict[int, InferqError] = {}
        self.versions: dict[str, None] = {}
        #: 1 where a row is answered (a result or an error): a byte per row, not a NaN
        #: test of a numpy scalar per arrival.
        self._settled = bytearray(n)
        #: Rows of ``_fitted`` (the reply block last checked) settled but not copied yet:
        #: (row, the block's row, arrival time) each; copied as one fancy-indexed
        #: assignment per output and timing field (``_flush``) when another block's row
        #: comes or the result is asked for, not as seven numpy item assignments per row.
        self._run_rows: list[int] = []
        self._run_ks: list[int] = []
        self._run_at: list[float] = []

    def add_plan(self, plan: ChunkPlan) -> None:
        """A sent chunk's inputs, in order: cache hits (and records already stored) settle
        now; the rest are to be waited for."""
        start = len(self.job_ids)
        self.asked_at[start : start + len(plan.specs)] = plan.t0
        for i, spec in enumerate(plan.specs, start):
            self.job_ids.append(spec.id)
            if spec.id in self.rows:
                self.more.setdefault(spec.id, []).append(i)
            else:
                self.rows[spec.id] = i
            if spec.record is not None:
                self._settle_row(i, spec.id, spec.record, spec.arrived or plan.t0, spec.cached)
            else:
                self.pending[spec.id] = None
        self.report()

    def settle(self, job_id: str, arrival: HeardArrival) -> None:
        """``job_id``'s record, as the listener heard it, into its row(s) not settled yet."""
        heard, at = arrival
        first = self.rows[job_id]
        for i in (first, *self.more[job_id]) if job_id in self.more else (first,):
            if not self._settled[i]:
                self._settle_row(i, job_id, heard, at, False)

    def _settle_row(self, i: int, job_id: str, heard: Heard, at: float, cached: bool) -> None:
        """Row ``i`` answered: its result, or its error kept."""
        self._done += 1
        self._settled[i] = 1
        if heard.__class__ is Row and not cached:
            # A current worker's success in a reply block: its rows copied (a run of the
            # block's rows at a time, ``_flush``), no Result.
            block = heard.block
            if block is not self._fitted:  # a block's rows share their shapes: checked once
                self._flush()
                kept = self._kept(block.outputs)
                if not self._fits(i, {n: (c.shape[1:], c.dtype) for n, c in kept.items()}, block.version):
                    return
                self._fitted = block
                self.versions.setdefault(block.version, None)
            self._run_rows.append(i)
            self._run_ks.append(heard.index)
            self._run_at.append(at)
            return
        try:
            result = result_from(heard, job_id, cached, float(self.asked_at[i]), at)
        except InferqError as exc:
            self.errors[i] = exc
            return
        if not self._put_result(i, result):
            return
        if cached:
            self.cached[i] = True
            self.timing["end_to_end_ms"][i] = result.timing.end_to_end_ms
        self.arrived_at[i] = at

    def report(self, _ids: int = 0) -> None:
        """Tell ``progress`` of the rows answered since it was last told (the listener's
        ``progress`` hook: the count of ids it passes is not the count of rows)."""
        if self._progress is not None and self._done:
            done, self._done = self._done, 0
            self._progress(done)

    def _put_result(self, i: int, result: Result) -> bool:
        arrays = {name: np.asarray(v) for name, v in self._kept(result.outputs).items()}
        if not self._fits(i, {name: (a.shape, a.dtype) for name, a in arrays.items()}, result.version):
            return False
        for name, a in arrays.items():
            self.outputs[name][i] = a
        t = result.timing
        for name in _FROM_WORKER:
            self.timing[name][i] = getattr(t, name)
        self.versions.setdefault(result.version, None)
        return True

    def _kept(self, outputs: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.wanted is None:
            return outputs
        return {name: v for name, v in outputs.items() if name in self.wanted}

    def _fits(self, i: int, rows: dict[str, tuple[tuple[int, ...], np.dtype[Any]]], version: str) -> bool:
        """Make the output arrays from the first row settled (each output's row shape and
        dtype); refuse a row that differs from them: ``IncompatibleVersion`` when the
        model's version changed during the call (sending again gives one version), else
        ``BadInput`` (a model whose output shapes vary with the input). A row without an
        output asked for (``outputs=``, checked against the model's metadata when the call
        began) came from another version of the model: ``IncompatibleVersion``."""
        missing = sorted(self.wanted - rows.keys()) if self.wanted is not None else []
        if missing or not rows:
            self.errors[i] = IncompatibleVersion(
                f"job {self.job_ids[i]}: {self.model}:{self.variant} version {version} answered "
                f"without the output(s) {missing or 'asked for'}; send it again"
            )
            return False
        if not self.outputs:
            self.outputs = {name: np.zeros((self.n, *shape), dtype) for name, (shape, dtype) in rows.items()}
            return True
        have = {name: (a.shape[1:], a.dtype) for name, a in self.outputs.items()}
        if rows == have:
            return True
        differ = f"outputs {_show(rows)} differ from the earlier inputs' {_show(have)}"
        if self.versions and version not in self.versions:
            self.errors[i] = IncompatibleVersion(
                f"job {self.job_ids[i]}: {self.model}:{self.variant} changed from version "
                f"{next(iter(self.versions))} to {version} during the call: {differ}; send them again"
            )
        else:
            self.errors[i] = BadInput(
                f"job {self.job_ids[i]}: {differ}, so they cannot be stacked: send such inputs in separate calls"
            )
        return False

    def _flush(self) -> None:
        """Copy the run of ``_fitted``'s rows settled so far into the output and timing
        arrays (the block's rows share one timing)."""
        if not self._run_rows:
            return
        block = self._fitted
        assert isinstance(block, ReplyBlock)
        rows = np.array(self._run_rows, dtype=np.intp)
        ks = np.array(self._run_ks, dtype=np.intp)
        for name, out in self.outputs.items():
            out[rows] = block.outputs[name][ks]
        for name in _FROM_WORKER:
            self.timing[name][rows] = block.timing[name]
        self.arrived_at[rows] = self._run_at
        self._run_rows, self._run_ks, self._run_at = [], [], []

    def result(self) -> BulkResult:
        """The call's answer, once every row is settled."""
        self._flush()
        fresh = ~self.cached & ~np.isnan(self.arrived_at)
        e2e = self.timing["end_to_end_ms"]
        e2e[fresh] = np.maximum(0.0, (self.arrived_at[fresh] - self.asked_at[fresh]) * 1e3)
        for i in self.errors:
            for column in self.timing.values():
                column[i] = np.nan
        return BulkResult(
            model=self.model,
            variant=self.variant,
            job_ids=self.job_ids,
            outputs=self.outputs,
            timing=self.timing,
            cached=self.cached,
            errors=self.errors,
            versions=tuple(self.versions),
        )


def check_outputs(info: ModelInfo, outputs: Sequence[str] | None) -> Sequence[str] | None:
    """``infer_many``'s ``outputs``, checked against the model's (``BadInput`` naming them)."""
    if outputs is None:
        return None
    if isinstance(outputs, str):
        outputs = [outputs]
    known = [s.name for s in info.outputs]
    unknown = [name for name in outputs if name not in known]
    if unknown or not outputs:
        raise BadInput(f"outputs: expected some of {known} for {info.key}, got {list(outputs)}")
    return outputs


def _show(rows: dict[str, tuple[tuple[int, ...], np.dtype[Any]]]) -> str:
    return ", ".join(f"{name} {dtype.name}{list(shape)}" for name, (shape, dtype) in sorted(rows.items()))
