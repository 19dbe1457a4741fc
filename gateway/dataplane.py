"""What the routes do, over one ``AsyncClient``: the gateway's only logic with I/O.

Routes parse HTTP and shape answers; everything that asks Redis goes through here, and
only through ``AsyncClient`` (bounded calls, the one error hierarchy, never a blocking
call on the event loop). Nothing is kept between requests: jobs live in Redis, behind
handles only their owner can resolve, so any number of gateways can serve one system.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from importlib import metadata
from typing import Any

from gateway import matching
from gateway.job_states import ENDED_BADLY, JobsAnswer, finished_state, pending_state
from gateway.protocol import DecodedRequest, EncodedResponse, datatype_of, encode_response
from gateway.schemas import (
    CancelResult,
    JobState,
    LatencyPercentiles,
    ModelMetadata,
    ModelReady,
    ModelStats,
    Readiness,
    ServerMetadata,
    TensorMetadata,
)
from producers import AsyncClient, AsyncJob
from tasks import constants as C
from tasks.codec import quote
from tasks.errors import (
    BadInput,
    InferqError,
    JobNotFound,
    ModelNotFound,
    NotReady,
    Timeout,
)
from tasks.keys import NAME_RE
from tasks.schema import CancelOutcome, JobStatus, ModelInfo
from tasks.settings import Settings
from tasks.wire import Result

#: A job reference in a URL: only handles (h- and 32 hex digits), never a content-hash id.
HANDLE_RE = re.compile(re.escape(C.HANDLE_PREFIX) + r"[0-9a-f]{32}")
#: The extensions ``GET /v2`` lists (the protocol's names, then inferq's own).
EXTENSIONS = ["binary_tensor_data", "inferq_async_jobs", "inferq_model_stats"]
#: Request parameters passed on to ``submit_many`` and ``infer_many``, and the values each takes.
PRIORITIES = tuple(sorted(C.PRIORITIES))
#: Triton's integer ``priority`` (all tritonclient can send: it reserves the name), 1 the highest.
TRITON_PRIORITIES = {0: C.DEFAULT_PRIORITY, 1: "high", 2: "normal", 3: "low"}


class DataPlane:
    """The gateway's operations, each a few ``AsyncClient`` calls."""

    def __init__(self, client: AsyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        try:
            self.version = metadata.version("inferq")
        except metadata.PackageNotFoundError:
            self.version = "0"

    # --- health and metadata --------------------------------------------------------

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="inferq", version=self.version, extensions=EXTENSIONS)

    async def readiness(self) -> Readiness:
        h = await self.client.health(timeout=self._probe_bound())
        return Readiness(
            ready=bool(h.get("ready")),
            broker=bool(h.get("broker")),
            results=bool(h.get("results")),
            workers=len(h.get("workers") or ()),
            models=len(h.get("models") or ()),
        )

    def _probe_bound(self) -> float:
        # A probe answers within 2 s even when Redis hangs: orchestrators time probes out.
        return min(self.settings.client_timeout_s, 1.5)

    async def model_info(self, model: str, version: str | None) -> ModelInfo:
        """The model variant a URL names; 404 (``ModelNotFound``) for any name not served."""
        for kind, name in (("model", model), ("version", version)):
            if name is not None and not NAME_RE.fullmatch(name):
                raise ModelNotFound(f"no {kind} named {quote(name)}")
        try:
            return await self.client.model_info(model, version)
        except ModelNotFound as exc:
            # The client names the models folder it looked in, for its operator: a path on
            # this host is not for HTTP callers.
            if str(self.settings.models_dir.resolve()) in str(exc):
                raise ModelNotFound(f"no model named {quote(model)}") from None
            raise

    async def model_metadata(self, model: str, version: str | None) -> ModelMetadata:
        info = await self.model_info(model, version)
        known = await self.client.models()
        versions = sorted({i.variant for i in known.values() if i.name == info.name} | {info.variant})
        return ModelMetadata(
            name=info.name,
            versions=versions,
            platform=info.runtime,
            inputs=[_tensor_metadata(s.name, s.dtype, matching.protocol_shape(s)) for s in info.inputs],
            outputs=[_tensor_metadata(s.name, s.dtype, matching.protocol_shape(s)) for s in info.outputs],
            parameters={"model_version": info.version, "max_batch_size": info.max_batch_size},
        )

    async def model_ready(self, model: str, version: str | None) -> ModelReady:
        info = await self.model_info(model, version)
        health = await self.client.health(timeout=self._probe_bound())
        return ModelReady(
            name=info.name, version=info.variant, ready=info.key in (health.get("models") or ())
        )

    async def model_stats(self, model: str, version: str | None) -> list[ModelStats]:
        """Recent load of one variant, or of every variant of the model when none is named."""
        info = await self.model_info(model, version)
        if version is None:
            known = await self.client.models()
            variants = sorted({i.variant for i in known.values() if i.name == info.name} | {info.variant})
        else:
            variants = [info.variant]
        stats = await asyncio.gather(*(self.client.model_stats(info.name, v) for v in variants))
        return [_model_stats(s, info.name, v) for s, v in zip(stats, variants, strict=True)]

    # --- inference ------------------------------------------------------------------

    async def _submit(self, info: ModelInfo, request: DecodedRequest) -> list[AsyncJob]:
        columns = matching.request_columns(request, info)
        options = _submit_options(request.parameters)
        return await self.client.submit_many(info.name, columns, variant=info.variant, **options)

    async def infer(self, model: str, version: str | None, request: DecodedRequest) -> EncodedResponse:
        """Send the request's N inputs and wait for all (the infer bound covers both), stacked.

        ``infer_many``: each reply block's rows are copied into the response's arrays as
        they arrive, with no ``Job`` or ``Result`` per input for the gateway to make and
        stack again (docs/benchmarks.md, "Tenth session"). Each input keeps its own job
        id and cache entry, as for ``POST .../jobs``."""
        info = await self.model_info(model, version)
        names = matching.output_names(request, info)
        columns = matching.request_columns(request, info)
        options = _submit_options(request.parameters)
        bound = self.settings.gateway_infer_timeout_s
        try:
            got = await self.client.infer_many(
                info.name, columns, variant=info.variant, timeout=bound, outputs=names, **options
            )
        except Timeout as exc:
            raise Timeout(f"no result within the gateway's infer timeout of {bound:g} s ({exc})") from None
        if got.errors:
            first = min(got.errors)
            raise _for_item(got.errors[first], first, len(got))
        head: dict[str, Any] = {"model_name": info.name, "model_version": info.variant}
        if request.id is not None:
            head["id"] = request.id
        head["parameters"] = {"cached": int(got.cached.sum())}
        return encode_response(head, [(n, got.outputs[n], request.wants_binary(n)) for n in names])

    # --- asynchronous jobs ----------------------------------------------------------

    async def submit_jobs(
        self, model: str, version: str | None, request: DecodedRequest, owner: str, wait_s: float | None
    ) -> JobsAnswer:
        """Submit N jobs; wait up to ``wait_s`` for them; one state (with handle) per input."""
        bulk = request.parameters.get("bulk", "per_input")
        if bulk != "per_input":
            raise BadInput(f"parameter bulk: expected per_input (one job per input), got {quote(str(bulk))}")
        info = await self.model_info(model, version)
        names = matching.output_names(request, info)
        jobs = await self._submit(info, request)
        handles = await self.client.handles(jobs, owner=owner)
        outcomes: list[Result | InferqError | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            if job.done:
                outcomes[i] = await _settled(job)
        waited = False
        pending = [i for i, o in enumerate(outcomes) if o is None]
        if pending and wait_s:
            waited = True
            # One wait per job (all on the client's one subscription): those that finish in
            # time are answered, the others stay queued (wait_all would give all or none).
            got = await asyncio.gather(
                *(jobs[i].wait(timeout=wait_s) for i in pending), return_exceptions=True
            )
            for i, outcome in zip(pending, got, strict=True):
                if isinstance(outcome, Timeout):
                    continue
                if isinstance(outcome, (Result, InferqError)):
                    outcomes[i] = outcome
                else:
                    raise outcome
        states = [
            finished_state(h, o, names) if o is not None else pending_state(h)
            for h, o in zip(handles, outcomes, strict=True)
        ]
        return JobsAnswer(states, all(o is not None for o in outcomes), waited)

    async def _job_id(self, handle: str, owner: str) -> str:
        if not HANDLE_RE.fullmatch(handle):
            raise JobNotFound(f"no job {quote(handle)}: job ids are the handles POST .../jobs answers")
        return await self.client.resolve(handle, owner=owner)

    async def job_state(self, handle: str, owner: str, wait_s: float | None = None) -> JobState:
        """A job's status, timing, and outputs or error; 404 for a handle not this owner's.

        ``wait_s`` (``Prefer: wait``): a job still queued or running is awaited that long
        on the client's one subscription (a long poll, woken by the result, not a loop
        of reads), then read again.
        """
        jid = await self._job_id(handle, owner)
        state = await self._read_state(handle, jid, owner)
        if wait_s and state.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            with contextlib.suppress(Timeout):
                await self.client.wait_for([jid], wait_s)
            state = await self._read_state(handle, jid, owner)
        return state

    async def _read_state(self, handle: str, jid: str, owner: str) -> JobState:
        for _ in range(2):  # a job that finishes between reading its result and its status: read again
            try:
                # By handle: "cached" is what this caller's submission was, never another
                # key's hit of the same input that this process happens to remember.
                result = await self.client.result(handle, owner=owner)
            except NotReady:
                status = await self.client.status(jid)
                if status in (JobStatus.QUEUED, JobStatus.RUNNING):
                    return pending_state(handle, status.value)
                continue
            except InferqError as exc:
                # The job's own error, or one of reading it (Redis away): the status tells which.
                status = await self.client.status(jid)
                if status is JobStatus.UNKNOWN:
                    raise JobNotFound(f"no job {handle[:12]}...: its result expired") from None
                if status in ENDED_BADLY:
                    return finished_state(handle, exc, ())
                if isinstance(exc, (JobNotFound, NotReady)):
                    continue
                raise
            return finished_state(handle, result, list(result.outputs))
        raise NotReady(f"job {handle[:12]}... changed state while being read; ask again")

    async def cancel(self, handle: str, owner: str) -> CancelResult:
        await self._job_id(handle, owner)
        # With the owner: a job other keys share (the same input) is left alone, "shared".
        outcome = await self.client.cancel(handle, owner=owner)
        if outcome is CancelOutcome.UNKNOWN:
            raise JobNotFound(f"no job {handle[:12]}...: its result expired")
        return CancelResult(id=handle, outcome=outcome.value)


def _submit_options(params: Any) -> dict[str, Any]:
    """inferq's own request parameters, checked, as ``submit_many`` and ``infer_many`` keywords."""
    out: dict[str, Any] = {}
    if "priority" in params:
        p = params["priority"]
        p = TRITON_PRIORITIES.get(p, p) if type(p) is int else p
        if p not in PRIORITIES:
            raise BadInput(
                f"parameter priority: expected one of {', '.join(PRIORITIES)}, or Triton's 0 (the default) "
                f"to 3 (1 the highest), got {quote(str(params['priority']))}"
            )
        out["priority"] = p
    if "no_cache" in params:
        if not isinstance(params["no_cache"], bool):
            raise BadInput("parameter no_cache: expected true or false")
        out["no_cache"] = params["no_cache"]
    if "deadline_ms" in params:
        d = params["deadline_ms"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 86_400_000:
            raise BadInput(f"parameter deadline_ms: expected milliseconds > 0, got {quote(str(d))}")
        out["deadline_ms"] = float(d)
    return out


async def _settled(job: AsyncJob) -> Result | InferqError:
    """A finished job's result or error (``wait`` on a done job does not wait)."""
    try:
        return await job.wait()
    except InferqError as exc:
        return exc


def _for_item(exc: InferqError, i: int, n: int) -> InferqError:
    """One input's error as the whole request's, naming the input when there are several."""
    if n == 1:
        return exc
    return type(exc)(f"input {i} of the batch of {n}: {exc}")


def _tensor_metadata(name: str, dtype: str, shape: list[int]) -> TensorMetadata:
    return TensorMetadata(name=name, datatype=datatype_of(dtype), shape=shape)


def _model_stats(s: dict[str, Any], name: str, variant: str) -> ModelStats:
    def pct(key: str) -> LatencyPercentiles:
        d = s.get(key) or {}
        return LatencyPercentiles(p50=d.get("p50"), p95=d.get("p95"), p99=d.get("p99"))

    return ModelStats(
        name=name,
        version=variant,
        queue_depth=s.get("depth"),
        workers=len(s["workers"]) if isinstance(s.get("workers"), list) else s.get("workers"),
        jobs_per_s=s.get("jobs_s"),
        queue_ms=pct("queue_ms"),
        compute_ms=pct("compute_ms"),
        processing_ms=pct("processing_ms"),
    )
