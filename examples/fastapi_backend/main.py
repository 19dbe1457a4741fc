"""A FastAPI backend that runs inferq jobs in the background and lets its clients poll.

    POST /predict          {"model": "digits", "input": [[[0.0], ...]]}
                           -> 202 {"id", "url", "status": "queued"}, Location: /predict/{id}
                           -> 200 {"status": "success", "outputs": ...} when the result is cached
    GET  /predict/{id}     -> 202 {"status": "queued" | "running"} with Retry-After, until
                           -> 200 {"status": "success", "outputs": ...} or {"status": "failure", "error": ...}

The request handlers never wait for a model: they submit and answer. The id a client
polls is an inferq *handle*: random, and owned by the user who submitted the job, so
nobody can guess another user's id or read it (404). Run it with uvicorn (README.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from producers import (
    AsyncClient,
    BadInput,
    BrokerUnavailable,
    InferqError,
    JobNotFound,
    JobStatus,
    ModelNotFound,
    Result,
    Timeout,
)
from tasks.settings import Settings

#: Seconds a client should wait before polling again.
POLL_AFTER_S = 1


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client per process, made on the server's event loop: it holds the Redis
    # connections and the one subscription on which every result arrives. Settings come
    # from the INFERQ_* environment variables (INFERQ_BROKER_URL, ...).
    async with AsyncClient(Settings.from_env()) as client:
        app.state.inferq = client
        yield


app = FastAPI(title="inferq example backend", lifespan=lifespan)


def inferq(request: Request) -> AsyncClient:
    client: AsyncClient = request.app.state.inferq
    return client


def current_user(x_user: Annotated[str, Header()] = "anonymous") -> str:
    """Stand-in for your authentication: the id of the user who owns the jobs it submits."""
    return x_user


Client = Annotated[AsyncClient, Depends(inferq)]
User = Annotated[str, Depends(current_user)]


class PredictRequest(BaseModel):
    model: str = "digits"
    #: An inferq variant (fp32, int8, ...); None: the model's default.
    variant: str | None = None
    #: One input, nested lists without a batch axis (digits: 28 x 28 x 1 numbers).
    input: list[Any]


@app.post("/predict", status_code=202)
async def predict(body: PredictRequest, response: Response, client: Client, user: User) -> dict[str, Any]:
    # Checks the input against the model (a wrong shape is BadInput: 400 below), claims
    # it, and queues it; returns at once. The same input submitted twice is one job.
    job = await client.submit(body.model, body.input, variant=body.variant)
    if job.done:  # answered from inferq's cache: no need to make the client poll
        response.status_code = 200
        return success(await job.wait())
    handle = await client.handle(job, owner=user)
    url = f"/predict/{handle}"
    response.headers["Location"] = url
    response.headers["Retry-After"] = str(POLL_AFTER_S)
    return {"id": handle, "url": url, "status": "queued"}


@app.get("/predict/{handle}")
async def poll(handle: str, response: Response, client: Client, user: User) -> dict[str, Any]:
    try:
        job_id = await client.resolve(handle, owner=user)
    except (JobNotFound, BadInput):  # never made, expired, another user's, or not a handle
        return not_found(response)
    status = await client.status(job_id)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        response.status_code = 202
        response.headers["Retry-After"] = str(POLL_AFTER_S)
        return {"id": handle, "status": status.value}
    if status is JobStatus.UNKNOWN:  # its result expired from the cache
        return not_found(response)
    # success, or it ended without a result (failure, expired, cancelled, lost): then
    # result() raises the job's own error, whose message says why.
    try:
        result = await client.result(job_id)
    except BrokerUnavailable:
        raise  # Redis did not answer: a 503 (below), not the job's failure
    except InferqError as exc:
        return {"id": handle, "status": status.value, "error": str(exc)}
    return {"id": handle, **success(result)}


def success(result: Result) -> dict[str, Any]:
    return {
        "status": "success",
        "model": result.model,
        "variant": result.variant,
        "cached": result.cached,
        "outputs": {name: value.tolist() for name, value in result.outputs.items()},
        "timing_ms": {"queue": result.timing.queue_ms, "compute": result.timing.compute_ms},
    }


def not_found(response: Response) -> dict[str, Any]:
    response.status_code = 404
    return {"error": "no such job"}


#: inferq's errors as HTTP statuses; anything else inferq raises (Redis away, a full
#: queue) is worth retrying later: 503.
STATUSES: tuple[tuple[type[InferqError], int], ...] = ((BadInput, 400), (ModelNotFound, 404), (Timeout, 504))


@app.exception_handler(InferqError)
async def inferq_error(request: Request, exc: InferqError) -> JSONResponse:
    status = next((code for cls, code in STATUSES if isinstance(exc, cls)), 503)
    headers = {"Retry-After": str(POLL_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)
