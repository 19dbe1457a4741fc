"""A job's fixed stages: decode -> validate -> (batch) -> predict -> split -> encode.

``prepare`` runs per job and raises for that job alone; ``run`` takes jobs that can
share one model call (same model variant, same input shapes) and returns one
``Result`` per job. Storing is the caller's business (Celery's tracer, or a batch
writer), which keeps this file free of I/O and easy to test.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.codec import decode_inputs
from tasks.errors import Expired, InferqError, ModelNotFound, TransientError
from tasks.keys import check_name
from tasks.schema import Timing
from tasks.validation import validate_inputs
from tasks.wire import Request, Result
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
        inputs = decode_inputs(request.inputs, self.max_payload_bytes)
        valid = validate_inputs(inputs, runtime.info.inputs)
        return Prepared(job_id, request, valid, runtime, received_at)

    def run(self, jobs: list[Prepared]) -> list[Result]:
        """One model call for ``jobs`` (all with the same ``batch_key``)."""
        runtime = jobs[0].runtime
        started_at = time.time()
        batch = {name: np.stack([j.inputs[name] for j in jobs]) for name in jobs[0].inputs}
        try:
            outputs = runtime.predict(batch)
        except InferqError:
            raise
        except Exception as exc:
            # The inputs passed validation, so this is the runtime's failure, not the
            # input's: report it as transient (not cached, may be retried).
            log.exception("runtime %s failed on a batch of %d", runtime.info.key, len(jobs))
            raise TransientError(
                f"{runtime.info.key}: runtime failed on a batch of {len(jobs)}: {type(exc).__name__}: {exc}"
            ) from None
        compute_done_at = time.time()
        results = []
        for i, job in enumerate(jobs):
            finished_at = time.time()
            results.append(
                Result(
                    job_id=job.job_id,
                    model=runtime.info.name,
                    variant=runtime.info.variant,
                    version=runtime.info.version,
                    outputs={name: np.asarray(arr[i]) for name, arr in outputs.items()},
                    timing=Timing.build(
                        enqueued_at=job.request.enqueued_at,
                        received_at=job.received_at,
                        started_at=started_at,
                        compute_done_at=compute_done_at,
                        finished_at=finished_at,
                        batch_size=len(jobs),
                    ),
                )
            )
        return results
