"""Asynchronous jobs: submit and poll, for clients that do not hold a request open.

``POST .../jobs`` takes the infer body and answers 202 with ``Location: /v2/jobs/{id}``
(or 200 with the result when it is cached or done in time); ``GET /v2/jobs/{id}`` polls;
``DELETE`` cancels. The id is an unguessable handle owned by the caller's API key.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import Owner
from gateway.prefer import applied, preferred_wait
from gateway.responses import JsonResponse
from gateway.routes import ERRORS
from gateway.routes.body import REQUEST_BODY, read_infer_request
from gateway.routes.health import plane
from gateway.schemas import CancelResult, ErrorBody, JobList, JobState

router = APIRouter(tags=["jobs"])

#: What a client is told to wait before polling a job that is not done.
POLL_AFTER_S = 1

SUBMIT_DESCRIPTION = """
Submits the request's inputs (the same body as `/infer`, JSON or binary) as jobs and
answers at once: **202** with `Location: /v2/jobs/{id}` and `Retry-After`, or **200**
with the job's state and outputs when it is already finished (a cached input).

`Prefer: wait=N` (RFC 7240) holds the request up to N seconds (capped at the infer
timeout) for the result; when honoured the answer carries `Preference-Applied: wait=N`.

**Bulk**: a batch dimension N > 1 makes one job per input (`parameters.bulk:
"per_input"`, the only form): the answer is `{"jobs": [state, ...]}` in input order, each
with its own id and location, 200 when all are finished, else 202 (no `Location`).
Job ids are unguessable handles owned by the API key that made them.
"""

_SUBMIT = {
    "description": SUBMIT_DESCRIPTION,
    "openapi_extra": REQUEST_BODY,
    "response_model": JobState | JobList,
    "responses": {
        **ERRORS,
        202: {"model": JobState | JobList, "description": "Submitted, not finished: poll Location."},
        413: {"model": ErrorBody, "description": "Request body over INFERQ_GATEWAY_MAX_BODY_BYTES."},
    },
}


async def _submit(request: Request, model: str, version: str | None, owner: str) -> Response:
    decoded = await read_infer_request(request)
    cap = request.app.state.settings.gateway_infer_timeout_s
    wait_s = preferred_wait(request.headers.getlist("prefer"), cap)
    answer = await plane(request).submit_jobs(model, version, decoded, owner, wait_s)
    headers: dict[str, str] = {}
    if answer.waited and wait_s is not None:
        headers["Preference-Applied"] = applied(wait_s)
    if not answer.done:
        headers["Retry-After"] = str(POLL_AFTER_S)
    body: JobState | JobList
    if len(answer.states) == 1:
        body = answer.states[0]
        if not answer.done:
            headers["Location"] = body.location
    else:
        body = JobList(jobs=answer.states)
    return JsonResponse(body, status_code=200 if answer.done else 202, headers=headers)


@router.post("/v2/models/{model}/jobs", summary="Submit jobs to the model's default version", **_SUBMIT)  # type: ignore[arg-type]
async def submit(request: Request, model: str, owner: Owner) -> Response:
    return await _submit(request, model, None, owner)


@router.post("/v2/models/{model}/versions/{version}/jobs", summary="Submit jobs", **_SUBMIT)  # type: ignore[arg-type]
async def submit_version(request: Request, model: str, version: str, owner: Owner) -> Response:
    return await _submit(request, model, version, owner)


@router.get(
    "/v2/jobs/{job_id}",
    response_model=JobState,
    summary="A job's status and timing; its outputs when done, its error when failed",
    description="`Prefer: wait=N` (RFC 7240) holds the request up to N seconds (capped at the infer "
    "timeout) while the job is queued or running: a long poll, answered as soon as the job ends.",
    responses={k: ERRORS[k] for k in (401, 404, 503)},
)
async def job_state(request: Request, job_id: str, owner: Owner) -> Response:
    cap = request.app.state.settings.gateway_infer_timeout_s
    wait_s = preferred_wait(request.headers.getlist("prefer"), cap)
    state = await plane(request).job_state(job_id, owner, wait_s)
    done = state.status not in ("queued", "running")
    headers = {} if done else {"Retry-After": str(POLL_AFTER_S)}
    if wait_s is not None:
        headers["Preference-Applied"] = applied(wait_s)
    return JsonResponse(state, headers=headers)


@router.delete(
    "/v2/jobs/{job_id}",
    response_model=CancelResult,
    summary="Cancel a job no worker has started (a running or finished job is left as it is)",
    responses={k: ERRORS[k] for k in (401, 404, 503)},
)
async def cancel(request: Request, job_id: str, owner: Owner) -> Response:
    return JsonResponse(await plane(request).cancel(job_id, owner))
