"""The client for asyncio web backends (FastAPI, Starlette, aiohttp): ``await`` every call.

The same jobs, errors, statuses, timeouts, cache, claims and wire forms as the sync
``Client`` (``producers/client.py``), from the same code: what a submission decides
(``producers/prepare.py``, ``producers/plans.py``), the message it sends (``producers/sender.py``), the
claims (``producers/claims.py``), the catalogue, the limit and the status rules are
shared; only the Redis calls differ, made on ``redis.asyncio`` and awaited. Nothing
here blocks the event loop: no sync Redis or kombu call, no thread. Every call is
bounded (``timeout``, or the settings' ``client_timeout_s``) and raises only inferq's
errors (``BrokerUnavailable`` when Redis does not answer in time).

One ``AsyncClient`` per event loop (its connections belong to the loop that first
used them); share it between the loop's requests. ``async with AsyncClient(s) as c``
or ``await c.aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from producers.async_listener import AsyncResultListener
from producers.bounded import AsyncCallBound
from producers.bulk import BulkResult, Gather, check_outputs
from producers.cache_hits import RecentHits
from producers.catalog import AsyncModelCatalog
from producers.claims import AsyncClaims
from producers.health import live_beats, read_model_stats, readiness
from producers.job import AsyncJob, Settler
from producers.limits import AsyncQueueDepthGuard
from producers.listener import Arrival, name_reply_channel
from producers.ownership import (
    CANCEL_OUTCOMES,
    CANCEL_SCRIPT,
    HandleRef,
    cancel_call,
    decode_ref,
    encode_handle,
    hit_of,
    queue_handle,
)
from producers.plans import ChunkPlan, chunk_plans
from producers.prepare import Prepared, check_options, prepare
from producers.served import ServedWarnings, explain_timeout, served_by
from producers.status import read_state, ready_record, run_steps_async
from tasks import constants as C
from tasks.connections import async_redis_client
from tasks.errors import InferqError, Timeout
from tasks.keys import check_job_id, handle_key, inflight_key, owners_key, queue_name, result_key
from tasks.schema import CancelOutcome, JobStatus, ModelInfo
from tasks.settings import Settings, redact_url
from tasks.wire import Result, StatusRecord

log = logging.getLogger(__name__)

#: Inputs checked, or results decoded, per turn of the event loop (about 1 ms of work).
SLICE = 16
#: How long a ``Timeout`` may spend asking which models no live worker serves.
EXPLAIN_S = 2.0


class AsyncClient:
    """Submits inference jobs and reads their results without blocking the event loop."""

    def __init__(self, settings: Settings) -> None:
        """No I/O here: connections open on first use."""
        self.settings = settings
        bound = settings.client_timeout_s
        self.backend = async_redis_client(settings.result_backend, settings, socket_timeout=bound, retries=1)
        self.broker = async_redis_client(settings.broker_url, settings, socket_timeout=bound, retries=1)
        self.bound = AsyncCallBound(
            bound, f"broker {redact_url(settings.broker_url)}, results {redact_url(settings.result_backend)}"
        )
        self.claims = AsyncClaims(
            self.backend, settings.inflight_ttl_s, settings.visibility_timeout_s, self.broker
        )
        self.listener = AsyncResultListener(self.backend)
        #: This client's recent cache hits: ``result(id)`` says ``cached`` as ``wait()`` did.
        self.hits = RecentHits()
        self.served_warnings = ServedWarnings()
        self.catalog = AsyncModelCatalog(self.backend, settings.models_dir)
        self.depth_guard = AsyncQueueDepthGuard(self.broker, settings.max_queue_depth)
        self._cancel = self.backend.register_script(CANCEL_SCRIPT)
        #: Submissions between their first claim and their send, run to the end on their own.
        self._sending: set[asyncio.Future[ChunkPlan]] = set()

    @classmethod
    def from_env(cls) -> AsyncClient:
        return cls(Settings.from_env())

    async def aclose(self) -> None:
        """Stop the listener and close every connection (later calls: ``BrokerUnavailable``)."""
        if self._sending:  # whose callers were cancelled: each is bounded by its deadline
            await asyncio.wait(set(self._sending))
        self.bound.closed = True
        await self.listener.aclose()
        await self.backend.aclose()  # type: ignore[attr-defined]
        await self.broker.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- models and health ------------------------------------------------------------

    async def models(self, refresh: bool = False, *, timeout: float | None = None) -> dict[str, ModelInfo]:
        """Model variants announced by workers (``name:variant`` -> ``ModelInfo``)."""
        return await self.bound.run(
            "reading the models", self.catalog.models(refresh), self.bound.deadline(timeout)
        )

    async def model_info(
        self, model: str, variant: str | None = None, *, timeout: float | None = None
    ) -> ModelInfo:
        """What the workers (or, failing that, the local models folder) say of a model."""
        return await self._model_info(model, variant, self.bound.deadline(timeout))

    async def _model_info(self, model: str, variant: str | None, deadline: float) -> ModelInfo:
        cached = self.catalog.cached(model, variant)
        if cached is not None:
            return cached
        return await self.bound.run(
            f"looking up model {model!r}", self.catalog.info(model, variant), deadline
        )

    async def ping(self, *, timeout: float | None = None) -> None:
        """Return when both Redis (broker and result backend) answer; else ``BrokerUnavailable``."""
        deadline = self.bound.deadline(timeout)
        await self.bound.run("pinging the broker", self.broker.ping(), deadline)
        await self.bound.run("pinging the result backend", self.backend.ping(), deadline)

    async def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        """What a readiness probe needs, never raising (``Client.health``)."""
        deadline = self.bound.deadline(timeout)
        ok: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for name, client in (("broker", self.broker), ("results", self.backend)):
            try:
                await self.bound.run(f"pinging the {name} Redis", client.ping(), deadline)
                ok[name] = True
            except InferqError as exc:
                ok[name], errors[f"{name}_error"] = False, str(exc)
        beats = []
        if ok["results"]:
            try:
                raw = await self.bound.run(
                    "reading worker heartbeats", self.backend.hgetall(C.WORKERS_KEY), deadline
                )
                beats = live_beats(raw)
            except InferqError as exc:
                errors["results_error"] = str(exc)
        return {**readiness(ok["broker"], ok["results"], beats), **errors}

    async def model_stats(
        self, model: str, variant: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Queue depth, workers and recent queue/compute percentiles of a model variant."""
        deadline = self.bound.deadline(timeout)
        info = await self._model_info(model, variant, deadline)
        reading = run_steps_async(read_model_stats(info), self.backend, self.broker)
        return await self.bound.run("reading model stats", reading, deadline)

    # --- jobs -------------------------------------------------------------------------

    async def submit(
        self,
        model: str,
        x: Any,
        *,
        variant: str | None = None,
        no_cache: bool = False,
        validate: bool = True,
        deadline_ms: float | None = None,
        priority: str = C.DEFAULT_PRIORITY,
        timeout: float | None = None,
    ) -> AsyncJob:
        """``Client.submit``, awaited: one input, returns at once with an ``AsyncJob``."""
        # One message: its bound is the call's (``Client.submit``: why).
        deadline, _, _, plans = await self._bulk_plans(
            model, [x], variant, 1, no_cache, validate, deadline_ms, priority, timeout, one_call=True
        )
        (plan,) = plans
        return (await self._submit_chunk(plan, deadline or self.bound.deadline(None)))[0]

    async def submit_many(
        self,
        model: str,
        xs: Iterable[Any] | np.ndarray | Mapping[str, Any],
        *,
        variant: str | None = None,
        chunk_size: int = 64,
        no_cache: bool = False,
        validate: bool = True,
        progress: Callable[[int], None] | None = None,
        deadline_ms: float | None = None,
        priority: str = C.DEFAULT_PRIORITY,
        timeout: float | None = None,
    ) -> list[AsyncJob]:
        """``Client.submit_many``, awaited: ``chunk_size`` inputs per message."""
        deadline, _, _, plans = await self._bulk_plans(
            model, xs, variant, chunk_size, no_cache, validate, deadline_ms, priority, timeout
        )
        jobs: list[AsyncJob] = []
        for plan in plans:
            jobs.extend(await self._submit_chunk(plan, self.bound.step(deadline)))
            if progress is not None:
                progress(len(plan.chunk))
        return jobs

    async def infer_many(
        self,
        model: str,
        xs: Iterable[Any] | np.ndarray | Mapping[str, Any],
        *,
        variant: str | None = None,
        chunk_size: int = 256,
        no_cache: bool = False,
        validate: bool = True,
        progress: Callable[[int], None] | None = None,
        deadline_ms: float | None = None,
        priority: str = C.DEFAULT_PRIORITY,
        timeout: float | None = None,
        outputs: Sequence[str] | None = None,
    ) -> BulkResult:
        """``Client.infer_many``, awaited: one array per output back, row ``i`` input ``i``'s."""
        deadline, info, n, plans = await self._bulk_plans(
            model, xs, variant, chunk_size, no_cache, validate, deadline_ms, priority, timeout
        )
        gather = Gather(info.name, info.variant, n, progress, check_outputs(info, outputs))
        for plan in plans:
            gather.add_plan(await self._send_chunk(plan, self.bound.step(deadline)))
        wait = self._wait_bound(None) if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await self.listener.collect(
                gather.pending,
                wait,
                progress=None if progress is None else gather.report,
                each=gather.settle,
            )
        except Timeout as exc:
            raise await self._explain(exc, [info.key]) from None
        return gather.result()

    async def _bulk_plans(
        self,
        model: str,
        xs: Iterable[Any] | np.ndarray | Mapping[str, Any],
        variant: str | None,
        chunk_size: int,
        no_cache: bool,
        validate: bool,
        deadline_ms: float | None,
        priority: str,
        timeout: float | None,
        one_call: bool = False,
    ) -> tuple[float | None, ModelInfo, int, Iterator[ChunkPlan]]:
        """``Client._bulk_plans``, awaited."""
        check_options(chunk_size, priority, deadline_ms)
        deadline = None if timeout is None else self.bound.deadline(timeout)
        first = (deadline or self.bound.deadline(None)) if one_call else self.bound.step(deadline)
        info = await self._model_info(model, variant, first)
        self.served_warnings.check(info.key, self.catalog.served)
        prepared = await self._prepare(info, xs, validate)
        plans = chunk_plans(
            self.settings,
            info,
            prepared,
            chunk_size,
            no_cache=no_cache,
            deadline_ms=deadline_ms,
            priority=priority,
        )
        return deadline, info, len(prepared), plans

    async def _prepare(
        self, info: ModelInfo, xs: Iterable[Any] | np.ndarray | Mapping[str, Any], validate: bool
    ) -> Sequence[Prepared]:
        """Every input checked and encoded before any is sent, ``SLICE`` per turn of the
        loop: checking a thousand inputs in one step would hold every other request back.

        An array of inputs (or a mapping of input name -> array of inputs) is checked in
        one step, as the sync client does: cast and checked once for all rows (under a
        microsecond per input), it stays one ``Stacked`` that the chunks slice and send as
        tensors; sliced here, each input was encoded alone and stacked again for the
        message."""
        if isinstance(xs, (np.ndarray, Mapping)):
            return prepare(self.settings, info, xs, validate=validate)
        items = list(xs)
        out: list[Prepared] = []
        for start in range(0, len(items), SLICE):
            if start:
                await asyncio.sleep(0)
            out.extend(prepare(self.settings, info, items[start : start + SLICE], validate=validate))
        return out

    async def _submit_chunk(self, plan: ChunkPlan, deadline: float) -> list[AsyncJob]:
        plan = await self._send_chunk(plan, deadline)
        info = plan.info
        return [
            AsyncJob(
                s.id,
                info.name,
                info.variant,
                plan.t0,
                s.cached,
                s.enqueued,
                s.record,
                None,
                s.arrived,
                owner=self,
            )
            for s in plan.specs
        ]

    async def _send_chunk(self, plan: ChunkPlan, deadline: float) -> ChunkPlan:
        """Claim and send one chunk; the plan as sent (its specs say what each input became)."""
        info, what = plan.info, f"submitting {len(plan.chunk)} input(s) to {plan.info.key}"
        # Before claiming any id: a refused job must not leave an in-flight claim behind.
        await self.bound.run(
            what, self.depth_guard.check(queue_name(info.name, info.variant), len(plan.chunk)), deadline
        )
        # From the first claim to the send, the steps run to their end even when the caller
        # is cancelled (a request's timeout, a client that hung up): cancelled in between,
        # they would leave ids claimed and no message sent, and every later submit of those
        # inputs would share a job nobody runs. They stay bounded by ``deadline``.
        sending = asyncio.ensure_future(self._claim_and_send(plan, deadline))
        self._sending.add(sending)
        sending.add_done_callback(self._sent)
        return await asyncio.shield(sending)

    def _sent(self, task: asyncio.Future[ChunkPlan]) -> None:
        self._sending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled never reads it

    async def _claim_and_send(self, plan: ChunkPlan, deadline: float) -> ChunkPlan:
        info, what = plan.info, f"submitting {len(plan.chunk)} input(s) to {plan.info.key}"
        if plan.no_cache:
            await self.bound.run(what, self.claims.claim_fresh(plan.ids, info.key), deadline)
            answers = plan.fresh_answers()
        else:
            answers = await self.bound.run(what, self.claims.check_and_claim(plan.ids, info.key), deadline)
        plan.read_claims(answers)
        if plan.redo:
            plan.read_reclaim(
                await self.bound.run(what, self.claims.reclaim(plan.redo_seen(), info.key), deadline)
            )
        # A job run again must not be answered with its previous run's record; and watch
        # before sending, so a result can never arrive unseen: the jobs sent here are
        # awaited on the listener's reply channel, which their message names.
        self.listener.forget(plan.send_ids)
        self.hits.forget(plan.send_ids)
        await self.listener.watch(plan.waiting_ids, plan.send_ids)
        outgoing = plan.message()
        if outgoing is not None:
            name_reply_channel([outgoing], self.listener.reply_channel)
            pipe = self.broker.pipeline(transaction=False)
            outgoing.queue_on(pipe)
            try:
                await self.bound.run(what, pipe.execute(), deadline)
            except BaseException as exc:
                # Nothing was queued (or nobody can tell): a claim left behind would make
                # every resubmit of these inputs wait for a job that may not exist.
                await self._release_claims(plan.send_ids, f"{type(exc).__name__}: {exc}")
                raise
        self.hits.remember_hits(plan.specs, plan.t0)
        return plan

    async def _release_claims(self, ids: list[str], reason: str) -> None:
        try:
            await self.bound.run(
                "releasing claims", self.claims.release(ids, reason), self.bound.deadline(None)
            )
        except InferqError as exc:  # the result Redis is down too: the claims go stale instead
            log.warning("could not release %d claim(s) after a failed send: %s", len(ids), exc)

    # --- ids and handles ----------------------------------------------------------------

    async def handle(
        self, job: AsyncJob | str, *, owner: str | None = None, timeout: float | None = None
    ) -> str:
        """An unguessable handle for a job (``Client.handle``); ``owner`` (an opaque string,
        e.g. a hash of an API key) makes ``resolve`` refuse the handle to anyone else, and
        ``cancel`` through it leave alone a job other owners share."""
        deadline = self.bound.deadline(timeout)
        if isinstance(job, AsyncJob):
            jid, hit = job.id, hit_of(job)
        else:
            jid, hit = (await self._resolve(check_job_id(job), None, deadline)).job_id, None
        h = C.HANDLE_PREFIX + secrets.token_hex(16)
        pipe = self.backend.pipeline(transaction=False)
        value = encode_handle(jid, owner, hit)
        queue_handle(pipe, handle_key(h), owners_key(jid), value, owner, self.settings.cache_ttl_s)
        await self.bound.run("creating a job handle", pipe.execute(), deadline)
        return h

    async def handles(
        self, jobs: list[AsyncJob], *, owner: str | None = None, timeout: float | None = None
    ) -> list[str]:
        """``handle`` for many jobs in one round trip (a bulk submit's: one call, not one
        task per job)."""
        made = [C.HANDLE_PREFIX + secrets.token_hex(16) for _ in jobs]
        pipe = self.backend.pipeline(transaction=False)
        for h, job in zip(made, jobs, strict=True):
            value = encode_handle(job.id, owner, hit_of(job))
            queue_handle(pipe, handle_key(h), owners_key(job.id), value, owner, self.settings.cache_ttl_s)
        if jobs:
            await self.bound.run("creating job handles", pipe.execute(), self.bound.deadline(timeout))
        return made

    async def resolve(self, handle: str, *, owner: str | None = None, timeout: float | None = None) -> str:
        """The job id behind a handle; ``JobNotFound`` for a handle never made, expired, or
        made for another ``owner``."""
        return (await self._resolve(check_job_id(handle), owner, self.bound.deadline(timeout))).job_id

    async def _resolve(self, ref: str, owner: str | None, deadline: float) -> HandleRef:
        if not ref.startswith(C.HANDLE_PREFIX):
            return HandleRef(ref)
        raw = await self.bound.run("resolving a job handle", self.backend.get(handle_key(ref)), deadline)
        return decode_ref(ref, raw, owner)

    # --- status, results, cancel ----------------------------------------------------------

    async def cancel(
        self, job_id: str, *, owner: str | None = None, timeout: float | None = None
    ) -> CancelOutcome:
        """Cancel a job no worker has started (``Client.cancel``); with ``owner``, a job
        other owners hold handles to is left alone (``shared``)."""
        deadline = self.bound.deadline(timeout)
        jid = (await self._resolve(check_job_id(job_id), owner, deadline)).job_id
        record = StatusRecord.cancelled(jid).encode()
        keys, args = cancel_call(
            result_key(jid), inflight_key(jid), owners_key(jid), owner, record, self.settings.cache_ttl_s
        )
        outcome = await self.bound.run("cancelling a job", self._cancel(keys=keys, args=args), deadline)
        return CANCEL_OUTCOMES[outcome.decode() if isinstance(outcome, bytes) else str(outcome)]

    async def status(
        self, job_id: str, *, owner: str | None = None, timeout: float | None = None
    ) -> JobStatus:
        """Where a job is (``Client.status``); ``unknown`` for an id never sent or expired."""
        deadline = self.bound.deadline(timeout)
        jid = (await self._resolve(check_job_id(job_id), owner, deadline)).job_id
        return (await self.bound.run("reading a job's status", self._state(jid), deadline))[1]

    async def _state(self, job_id: str) -> tuple[StatusRecord | None, JobStatus]:
        """The job's stored record and status (``producers/status.py``, shared with ``Client``)."""
        reading = read_state(job_id, self.settings.visibility_timeout_s)
        return await run_steps_async(reading, self.backend, self.broker)

    async def result(
        self, job_id: str, *, owner: str | None = None, wait: bool = False, timeout: float | None = None
    ) -> Result:
        """A job's result by id or handle, or its error raised (``Client.result``)."""
        ref = await self._resolve(check_job_id(job_id), owner, self.bound.deadline(None if wait else timeout))
        jid = ref.job_id
        if wait:
            record, _ = (await self.listener.wait([jid], self._wait_bound(timeout)))[jid]
            return self.hits.result_for(ref, record)
        found, status = await self.bound.run(
            "reading a job's result", self._state(jid), self.bound.deadline(timeout)
        )
        return self.hits.result_for(ref, ready_record(jid, found, status))

    async def wait_for(
        self, job_ids: list[str], timeout: float | None, models: Iterable[str] = ()
    ) -> dict[str, Arrival]:
        """Await each id's ready record (``AsyncJob.wait`` calls this); the ``Timeout`` names
        those of ``models`` that no live worker serves (``Client.wait_for``)."""
        try:
            return await self.listener.wait(job_ids, self._wait_bound(timeout))
        except Timeout as exc:
            raise await self._explain(exc, models) from None

    async def _explain(self, exc: Timeout, models: Iterable[str]) -> Timeout:
        models = list(models)
        if not models:
            return exc
        try:
            raw = await self.bound.run(
                "reading worker heartbeats",
                self.backend.hgetall(C.WORKERS_KEY),
                self.bound.deadline(min(EXPLAIN_S, self.bound.default_s)),
            )
        except InferqError:
            return exc
        return explain_timeout(exc, models, served_by(raw))

    def _wait_bound(self, timeout: float | None) -> float:
        return self.settings.wait_timeout_s if timeout is None else timeout

    async def wait(self, job: AsyncJob, timeout: float | None = None) -> Result:
        """``await job.wait(timeout)``."""
        return await job.wait(timeout)

    async def wait_all(
        self,
        jobs: Iterable[AsyncJob],
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Result | InferqError]:
        """Await many jobs on the one subscription; each entry is a result or its error, in order."""
        jobs = list(jobs)
        pending = [j for j in jobs if not j.done]
        # Settled as heard, from the loop, while the rest are still coming.
        settler = Settler(pending)
        try:
            await self.listener.collect(
                list(settler.first), self._wait_bound(timeout), progress=progress, each=settler.settle
            )
        except Timeout as exc:
            raise await self._explain(exc, {j.key for j in pending}) from None
        out: list[Result | InferqError] = []
        for n, j in enumerate(jobs, 1):
            if n % SLICE == 0:
                await asyncio.sleep(0)  # a cache hit's result is read here: not all in one step
            out.append(j._outcome())
        return out
