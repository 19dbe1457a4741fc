"""A job's fixed stages: decode -> validate -> (batch) -> predict -> split -> encode.

``prepare`` runs per job and raises for that job alone; ``prepare_bulk`` does the same
for a ``BulkTensor`` message's jobs at once (one decode, each check once for all rows;
a row that fails alone is answered alone). Both give ``Block``s: jobs whose inputs are
stacked (a single job is a block of one row). ``compute`` runs blocks that can share one
model call (same model variant, same input shapes); ``run`` is the same for single
jobs, one ``Result`` each. Storing is the caller's business (Celery's tracer, or a
batch writer), which keeps this file free of I/O and easy to test.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.codec import decode_inputs, decode_stacked
from tasks.errors import Expired, InferqError, ModelNotFound, TransientError
from tasks.keys import check_name
from tasks.schema import Timing
from tasks.validation import validate_inputs, validate_rows
from tasks.wire import BulkTensor, Request, Result
from workers.models.runtimes.base import Runtime

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A decoded, validated job, ready to be batched."""

    job_id: str
    request: Request
    inputs: dict[str, np.ndarray]
    runtime: Runtime
    received_at: float

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys can be stacked into one model call."""
        shapes = tuple((k, v.shape) for k, v in self.inputs.items())
        return (self.runtime.info.key, shapes)

    def as_block(self) -> Block:
        return Block(
            [self.job_id],
            self.request,
            {k: v[np.newaxis] for k, v in self.inputs.items()},
            self.runtime,
            self.received_at,
        )


@dataclass
class Block:
    """Jobs of one request whose inputs are stacked, one array per input name (row ``i``
    is ``ids[i]``'s): a bulk tensor message's good rows, or one job."""

    ids: list[str]
    request: Request
    inputs: dict[str, np.ndarray]
    runtime: Runtime
    received_at: float
    #: Fields the jobs' last task event carries when no ``task-received`` went out for
    #: them (a bulk message's: one event per job instead of two); None: it went out.
    announce: dict[str, Any] | None = None

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Blocks with equal keys can share one model call (``Prepared.batch_key``'s form)."""
        return (self.runtime.info.key, tuple((k, v.shape[1:]) for k, v in self.inputs.items()))

    def split(self, size: int) -> list[Block]:
        """This block in parts of at most ``size`` rows (views, no copy)."""
        if self.rows <= size:
            return [self]
        return [
            Block(
                self.ids[i : i + size],
                self.request,
                {k: v[i : i + size] for k, v in self.inputs.items()},
                self.runtime,
                self.received_at,
                self.announce,
            )
            for i in range(0, self.rows, size)
        ]


@dataclass
class Computed:
    """One model call's outputs for its blocks (rows in block order) and when it ran."""

    blocks: list[Block]
    outputs: dict[str, np.ndarray]
    started_at: float
    compute_done_at: float

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.blocks)

    def parts(self) -> list[tuple[Block, dict[str, np.ndarray], Timing]]:
        """Each block with its rows of the outputs (views) and its jobs' timing (shared:
        they came in one message and ran in one call)."""
        out = []
        start, size, finished_at = 0, self.rows, time.time()
        for b in self.blocks:
            rows = {k: v[start : start + b.rows] for k, v in self.outputs.items()}
            start += b.rows
            timing = Timing.build(
                enqueued_at=b.request.enqueued_at,
                received_at=b.received_at,
                started_at=self.started_at,
                compute_done_at=self.compute_done_at,
                finished_at=finished_at,
                batch_size=size,
            )
            out.append((b, rows, timing))
        return out


class Pipeline:
    def __init__(self, runtimes: Mapping[str, Runtime], *, max_payload_bytes: int) -> None:
        self.runtimes = dict(runtimes)
        self.max_payload_bytes = max_payload_bytes

    def prepare(self, job_id: str, raw: Any, received_at: float) -> Prepared:
        """Decode and validate one job; raises ``BadInput``/``ModelNotFound`` for it alone."""
        try:
            return self._prepare(job_id, raw, received_at)
        except InferqError:
            raise
        except Exception as exc:
            # A gap in the checks must cost this job, never the fetcher thread. Logged by
            # type and place only: an exception's text may quote the input. A plain
            # InferqError, not BadInput: it is not cached, so a fixed worker gets to retry.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "job %s: unexpected %s while decoding at %s:%s",
                job_id,
                type(exc).__name__,
                where.filename,
                where.lineno,
            )
            raise InferqError(
                f"the job's input could not be checked: unexpected {type(exc).__name__} in the worker"
            ) from None

    def _prepare(self, job_id: str, raw: Any, received_at: float) -> Prepared:
        request = Request.from_wire(raw)
        runtime = self._runtime(request, received_at)
        inputs = decode_inputs(request.inputs, self.max_payload_bytes)
        valid = validate_inputs(inputs, runtime.info.inputs)
        return Prepared(job_id, request, valid, runtime, received_at)

    def prepare_bulk(
        self, bulk: BulkTensor, received_at: float
    ) -> tuple[Block | None, dict[str, InferqError]]:
        """Decode and check a bulk tensor message's jobs at once: the block of its good
        rows (None if none), and the jobs that fail alone with their error. An error of
        the whole message (its dtype, shape, model, deadline...) is raised: every job's."""
        try:
            return self._prepare_bulk(bulk, received_at)
        except InferqError:
            raise
        except Exception as exc:  # as in ``prepare``: a gap in the checks costs these jobs only
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "bulk of %d: unexpected %s while decoding at %s:%s",
                len(bulk.ids),
                type(exc).__name__,
                where.filename,
                where.lineno,
            )
            raise InferqError(
                f"the job's input could not be checked: unexpected {type(exc).__name__} in the worker"
            ) from None

    def _prepare_bulk(
        self, bulk: BulkTensor, received_at: float
    ) -> tuple[Block | None, dict[str, InferqError]]:
        if bulk.error is not None:
            raise bulk.error
        runtime = self._runtime(bulk.common, received_at)
        stacked = decode_stacked(bulk.tensors, bulk.rows_sent, self.max_payload_bytes)
        if bulk.rows is not None:  # items without a usable id: their rows are left out
            stacked = {k: v[bulk.rows] for k, v in stacked.items()}
        valid, bad = validate_rows(stacked, runtime.info.inputs)
        ids = bulk.ids
        failed: dict[str, InferqError] = {}
        if bad:
            failed = {ids[i]: err for i, err in bad.items()}
            keep = [i for i in range(len(ids)) if i not in bad]
            if not keep:
                return None, failed
            ids = [ids[i] for i in keep]
            valid = {k: v[keep] for k, v in valid.items()}
        return Block(ids, bulk.common, valid, runtime, received_at), failed

    def _runtime(self, request: Request, received_at: float) -> Runtime:
        """The request's runtime, or the error that ends its jobs before any decoding."""
        if request.deadline_at is not None and received_at > request.deadline_at:
            late_ms = (received_at - request.deadline_at) * 1e3
            raise Expired(f"job reached a worker {late_ms:.0f} ms after its deadline; not computed")
        key = f"{request.model}:{request.variant}"
        runtime = self.runtimes.get(key)
        if runtime is None:
            # Names never reach a path here (runtimes are looked up by key), but a name
            # with '/' or '..' is malformed, not merely unknown: say so.
            check_name("model", request.model)
            check_name("variant", request.variant)
            raise ModelNotFound(f"this worker does not serve {key}; it serves {sorted(self.runtimes)}")
        if request.version is not None and request.version != runtime.info.version:
            raise ModelNotFound(
                f"{key}: job asks for version {request.version[:40]}, "
                f"this worker serves version {runtime.info.version}"
            )
        return runtime

    def compute(self, blocks: list[Block]) -> Computed:
        """One model call for ``blocks`` (all with the same ``batch_key``); a lone block's
        inputs go to the model as they are, several are joined (one copy per batch)."""
        runtime = blocks[0].runtime
        started_at = time.time()
        if len(blocks) == 1:
            batch = blocks[0].inputs
        else:
            batch = {name: np.concatenate([b.inputs[name] for b in blocks]) for name in blocks[0].inputs}
        n = sum(b.rows for b in blocks)
        try:
            outputs = runtime.predict(batch)
        except InferqError:
            raise
        except Exception as exc:
            # The inputs passed validation, so this is the runtime's failure, not the
            # input's: report it as transient (not cached, may be retried).
            log.exception("runtime %s failed on a batch of %d", runtime.info.key, n)
            raise TransientError(
                f"{runtime.info.key}: runtime failed on a batch of {n}: {type(exc).__name__}: {exc}"
            ) from None
        return Computed(blocks, outputs, started_at, time.time())

    def run(self, jobs: list[Prepared]) -> list[Result]:
        """One model call for ``jobs`` (all with the same ``batch_key``), a ``Result`` each."""
        computed = self.compute([j.as_block() for j in jobs])
        info = jobs[0].runtime.info
        results = []
        for block, outputs, timing in computed.parts():
            results.append(
                Result(
                    job_id=block.ids[0],
                    model=info.name,
                    variant=info.variant,
                    version=info.version,
                    outputs={name: np.asarray(arr[0]) for name, arr in outputs.items()},
                    timing=timing,
                )
            )
        return results
