"""How a job looks over HTTP: its state (status, timing, outputs or error) and location.

A job's handle is its id in URLs; the state is built from what the client reports (a
``Result``, the job's own error, or a status) so that ``POST .../jobs`` and
``GET /v2/jobs/{id}`` describe a job in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from gateway.protocol import output_json
from gateway.schemas import JobState
from tasks.errors import Expired, InferqError, JobCancelled, JobNotFound
from tasks.schema import JobStatus
from tasks.wire import Result


def job_location(handle: str) -> str:
    return f"/v2/jobs/{handle}"


@dataclass(frozen=True)
class JobsAnswer:
    """Jobs submitted through ``POST .../jobs``: their states, and whether all are done."""

    states: list[JobState]
    done: bool
    waited: bool


#: The statuses of a job that ended without a result.
ENDED_BADLY = (JobStatus.FAILURE, JobStatus.EXPIRED, JobStatus.CANCELLED, JobStatus.LOST)

#: A finished job's error class and the status its state shows.
_FAILED_STATUS: tuple[tuple[type[InferqError], str], ...] = (
    (JobCancelled, JobStatus.CANCELLED.value),
    (Expired, JobStatus.EXPIRED.value),
    (JobNotFound, JobStatus.LOST.value),  # a job whose message is gone (status lost)
)


def finished_state(handle: str, outcome: Result | InferqError, names: Iterable[str] = ()) -> JobState:
    """A finished job's state: its outputs (``names``, else all) or its error."""
    if isinstance(outcome, InferqError):
        status = next((s for cls, s in _FAILED_STATUS if isinstance(outcome, cls)), JobStatus.FAILURE.value)
        return JobState(id=handle, location=job_location(handle), status=status, error=str(outcome))
    outputs = [
        output_json(name, np.asarray(outcome.outputs[name])[np.newaxis], binary=False, as_list=True)
        for name in (list(names) or outcome.outputs)
    ]
    return JobState.model_validate(
        {
            "id": handle,
            "location": job_location(handle),
            "status": JobStatus.SUCCESS.value,
            "model_name": outcome.model,
            "model_version": outcome.variant,
            "cached": outcome.cached,
            "timing": outcome.timing.to_dict(),
            "outputs": outputs,
        },
        strict=False,
    )


def pending_state(handle: str, status: str = JobStatus.QUEUED.value) -> JobState:
    """A job not finished yet: queued or running."""
    return JobState(id=handle, location=job_location(handle), status=status)
