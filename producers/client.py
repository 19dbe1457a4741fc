"""The client a web backend imports: submit jobs, poll or wait for results.

Imports Celery, redis, numpy and msgpack only: never TensorFlow or LiteRT. Every call
that talks to Redis is bounded in time (``producers/bounded.py``): ``timeout``, or the
settings' ``client_timeout_s``; past it, or when Redis fails, it raises
``BrokerUnavailable``, never a redis or kombu exception. Calls run on the caller's
thread; their socket waits end by the call's deadline.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from celery import Celery

from producers.bounded import CallBound, bounded_redis
from producers.bulk import BulkResult, Gather, check_outputs
from producers.cache_hits import RecentHits
from producers.catalog import ModelCatalog
from producers.claims import Claims
from producers.coalesce import Coalescer, queue_sends
from producers.health import live_beats, read_model_stats, readiness
from producers.heard import HeardArrival
from producers.job import Job, Settler
from producers.limits import QueueDepthGuard
from producers.listener import Arrival, ResultListener, name_reply_channel
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
from producers.prepare import check_options, named_inputs, prepare
from producers.served import ServedWarnings, explain_timeout, served_by
from producers.status import read_state, ready_record, run_steps
from tasks import constants as C
from tasks.app import create_app
from tasks.errors import InferqError, Timeout
from tasks.keys import check_job_id, handle_key, inflight_key, owners_key, queue_name, result_key
from tasks.kombu_layout import check_transport_options
from tasks.schema import CancelOutcome, JobStatus, ModelInfo
from tasks.settings import Settings, redact_url
from tasks.wire import Result, StatusRecord

log = logging.getLogger(__name__)

#: ``wait_all`` lets other threads run after reading this many results.
YIELD_EVERY = 32

#: How long a ``Timeout`` may spend asking which models no live worker serves.
EXPLAIN_S = 2.0
#: How long a send waits for the result listener to confirm its reply channel's
#: subscription (only when the listener is (re)connecting: a round trip on its
#: connection, under way while the message is built); past it the jobs are sent anyway
#: and their keys read once the subscription is confirmed.
CONFIRM_WAIT_S = 0.5


class Client:
    """Submits inference jobs to the workers through Redis and reads their results."""

    def __init__(self, settings: Settings, *, app: Celery | None = None) -> None:
        self.settings = settings
        bound = settings.client_timeout_s
        #: The Celery app of these settings, for Celery's own tools (``AsyncResult``,
        #: ``control``); jobs are sent without it (``producers/sender.py``).
        self.app = app or create_app(settings)
        # An app handed in may carry transport options that move kombu's keys.
        check_transport_options(self.app.conf.broker_transport_options or {}, settings.broker_url)
        self.bound = CallBound(
            bound, f"broker {redact_url(settings.broker_url)}, results {redact_url(settings.result_backend)}"
        )
        # Two tries of half the bound each; inside a call, every wait is cut to what is left
        # of the call's own bound (``producers/bounded.py``).
        self.backend = bounded_redis(
            settings.result_backend, settings, socket_timeout=bound / 2, connections=self.bound.connections
        )
        self.broker = bounded_redis(
            settings.broker_url, settings, socket_timeout=bound / 2, connections=self.bound.connections
        )
        self.claims = Claims(
            self.backend, settings.inflight_ttl_s, settings.visibility_timeout_s, self.broker
        )
        #: Watches submitted jobs so results are seen (and timed) as they arrive.
        self.listener = ResultListener(self.backend)
        #: This client's recent cache hits: ``result(id)`` says ``cached`` as ``wait()`` did.
        self.hits = RecentHits()
        self.served_warnings = ServedWarnings()
        self.catalog = ModelCatalog(self.backend, settings.models_dir)
        self.depth_guard = QueueDepthGuard(self.broker, settings.max_queue_depth)
        self._cancel = self.backend.register_script(CANCEL_SCRIPT)
        #: Single-input submissions of concurrent threads, claimed and sent together.
        self._singles: Coalescer[ChunkPlan, list[Job]] = Coalescer(self._submit_plans)

    @classmethod
    def from_env(cls) -> Client:
        return cls(Settings.from_env())

    def close(self) -> None:
        """Stop the listener and close every connection this client opened."""
        self.bound.close()
        self.listener.close()
        self.backend.close()
        self.broker.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- models ---------------------------------------------------------------------

    def models(self, refresh: bool = False, *, timeout: float | None = None) -> dict[str, ModelInfo]:
        """Model variants announced by workers (``name:variant`` -> ``ModelInfo``)."""
        return self.bound.run(
            "reading the models", lambda: self.catalog.models(refresh), self.bound.deadline(timeout)
        )

    def model_info(
        self, model: str, variant: str | None = None, *, timeout: float | None = None
    ) -> ModelInfo:
        """What the workers (or, failing that, the local models folder) say of a model."""
        return self._model_info(model, variant, self.bound.deadline(timeout))

    def _model_info(self, model: str, variant: str | None, deadline: float) -> ModelInfo:
        cached = self.catalog.cached(model, variant)
        if cached is not None:
            return cached
        return self.bound.run(
            f"looking up model {model!r}", lambda: self.catalog.info(model, variant), deadline
        )

    def ping(self, *, timeout: float | None = None) -> None:
        """Return when both Redis (broker and result backend) answer; else ``BrokerUnavailable``.

        For readiness probes: bounded like every call (``timeout``, or the client's default).
        """

        def both() -> None:
            self.broker.ping()
            self.backend.ping()

        self.bound.run("pinging Redis", both, self.bound.deadline(timeout))

    # --- jobs -----------------------------------------------------------------------

    def prepare_inputs(self, info: ModelInfo, x: Any) -> dict[str, np.ndarray]:
        """One input (array) or named inputs (mapping) as a name -> array dict."""
        return named_inputs(info, x)

    def submit(
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
    ) -> Job:
        """Send one input (without batch axis) or ``{input_name: array}`` to ``model``.

        Returns at once. A stored result for the same model, variant, version and
        input comes back as a finished, ``cached`` job, and nothing is enqueued; a job
        for the same input already queued or running is not enqueued again.
        ``priority`` (``high``, ``normal``, ``low``): a worker takes queued ``high``
        jobs before any ``normal`` one, and ``normal`` before ``low``.

        Inputs (arrays or nested lists) are cast to the model's dtypes where no value
        changes (float64 -> float32 within range, int -> float, whole numbers -> int);
        a lossy cast raises ``BadInput`` naming the expected dtype. ``validate=False``
        sends the input exactly as given, unchecked and uncast.

        ``timeout`` (default: the settings' ``client_timeout_s``) bounds the call; when
        Redis does not answer within it (or fails), ``BrokerUnavailable`` is raised, and
        the job may or may not be queued: submitting the same input again is safe.
        """
        # One message: its bound is the call's (``timeout`` overrides the default bound,
        # where a bulk call's many messages each keep the default: ``CallBound.step``).
        deadline, info, _, plans = self._bulk_plans(
            model, [x], variant, 1, no_cache, validate, deadline_ms, priority, timeout, one_call=True
        )
        (plan,) = plans
        bound = deadline or self.bound.deadline(None)
        return self.bound.run(f"submitting 1 input to {info.key}", lambda: self._submit_chunk(plan), bound)[0]

    def submit_many(
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
    ) -> list[Job]:
        """Send many inputs, ``chunk_size`` per message; returns one ``Job`` per input, in order.

        ``xs`` is an array with a leading axis over inputs, a mapping of input name ->
        such an array (a model of several inputs: row ``i`` of each is input ``i``), or an
        iterable of inputs (arrays or ``{name: array}``). Each input keeps its own job id and cache entry;
        inputs already cached (or in flight) are not sent again. ``progress(n)`` is
        called as inputs are checked and sent. ``timeout`` bounds the whole call; each
        message of ``chunk_size`` inputs is bounded besides by the client's default bound
        (a hung Redis is reported then, not at the end of a long ``timeout``). Big inputs
        go fewer per message: at most half ``max_message_bytes`` (16 MB by default) of
        them, past the first (``plans.chunk_bytes``).
        """
        deadline, info, _, plans = self._bulk_plans(
            model, xs, variant, chunk_size, no_cache, validate, deadline_ms, priority, timeout
        )
        jobs: list[Job] = []
        for plan in plans:
            jobs.extend(
                self.bound.run(
                    f"submitting {len(plan.chunk)} input(s) to {info.key}",
                    lambda plan=plan: self._submit_chunk(plan),  # type: ignore[misc]
                    self.bound.step(deadline),
                )
            )
            if progress is not None:
                progress(len(plan.chunk))
        return jobs

    def infer_many(
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
        """Send many inputs and wait for them all: one array per output back, row ``i``
        input ``i``'s (``producers/bulk.py``).

        Sent as ``submit_many`` sends them (each input its own job id and cache entry,
        ``chunk_size`` per message), and awaited as ``wait_all`` awaits them, without a
        ``Job`` or a ``Result`` per input. A failed input is in ``errors`` (by row), not
        raised: ``raise_for_errors()`` raises the first. ``progress(n)`` is called as
        ``n`` more inputs are answered (cache hits as their chunk is sent, the rest as
        their results arrive): ``len(xs)`` in all. ``timeout`` bounds the whole call
        (sending and waiting; without it, the wait gets the settings' ``wait_timeout_s``);
        each message is bounded besides by the client's default bound. ``outputs`` names
        the outputs to keep (all by default): the others are neither copied nor compared.
        """
        deadline, info, n, plans = self._bulk_plans(
            model, xs, variant, chunk_size, no_cache, validate, deadline_ms, priority, timeout
        )
        gather = Gather(info.name, info.variant, n, progress, check_outputs(info, outputs))
        for plan in plans:
            answer = self.bound.run(
                f"submitting {len(plan.chunk)} input(s) to {info.key}",
                lambda plan=plan: self._send_plans([plan])[0],  # type: ignore[misc]
                self.bound.step(deadline),
            )
            if isinstance(answer, BaseException):
                raise answer
            gather.add_plan(answer)
        read = 0

        def settle(jid: str, arrival: HeardArrival) -> None:
            nonlocal read
            gather.settle(jid, arrival)
            read += 1
            if read % YIELD_EVERY == 0:
                time.sleep(0)  # the listener thread's turn at the GIL (``wait_all``: why)

        wait = self._wait_bound(None) if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.listener.collect(
                gather.pending,
                wait,
                progress=None if progress is None else gather.report,
                each=settle,
            )
        except Timeout as exc:
            raise self._explain(exc, [info.key]) from None
        return gather.result()

    def _bulk_plans(
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
        """A bulk call's options and inputs checked before anything is sent: its deadline
        (None: each message its own), its model, how many inputs, and its chunks to send
        (each made as it is sent: ``plans.chunk_plans``). ``one_call``: a single
        input's ``submit``, each step bounded by its ``timeout`` alone."""
        check_options(chunk_size, priority, deadline_ms)
        deadline = None if timeout is None else self.bound.deadline(timeout)
        first = (deadline or self.bound.deadline(None)) if one_call else self.bound.step(deadline)
        info = self._model_info(model, variant, first)
        self.served_warnings.check(info.key, self.catalog.served)
        prepared = prepare(self.settings, info, xs, validate=validate)
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

    def _submit_chunk(self, plan: ChunkPlan) -> list[Job]:
        """One message's worth of jobs (inside the call's bound). A single input joins the
        submissions other threads have in flight (``producers/coalesce.py``)."""
        if len(plan.chunk) == 1:
            return self._singles.submit(plan, self.bound.current())
        answer = self._submit_plans([plan])[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _submit_plans(self, plans: list[ChunkPlan]) -> list[list[Job] | BaseException]:
        """``_send_plans``, each chunk sent as its jobs."""
        return [a if isinstance(a, BaseException) else self._jobs_of(a) for a in self._send_plans(plans)]

    def _send_plans(self, plans: list[ChunkPlan]) -> list[ChunkPlan | BaseException]:
        """Chunks of jobs with one claim call per model variant and one send pipeline for
        all; per chunk the plan as sent, or the error that refused it
        (``producers/plans.py`` decides what each claim answer means)."""
        out: list[ChunkPlan | BaseException] = []
        live: list[ChunkPlan] = []
        for plan in plans:
            try:
                # Before claiming any id: a refused job must not leave an in-flight claim behind.
                self.depth_guard.check(queue_name(plan.info.name, plan.info.variant), len(plan.chunk))
            except InferqError as exc:
                out.append(exc)
                continue
            out.append(plan)
            live.append(plan)
        claimed: list[str] = []
        try:
            self._claim(live, claimed)
            send_ids = [jid for plan in live for jid in plan.send_ids]
            # A job run again (after a failure of the moment, or a cancel) must not be
            # answered with the record its previous run left in the listener.
            self.listener.forget(send_ids)
            self.hits.forget(send_ids)
            # Watch before sending: a result can then never arrive unseen. The jobs sent here
            # are awaited on the listener's reply channel, which their messages name; sent
            # once it is confirmed, they need no read of their keys after it.
            subscribed = self.listener.watch([jid for plan in live for jid in plan.waiting_ids], send_ids)
            try:
                outgoing = [m for plan in live if (m := plan.message()) is not None]
            finally:
                self.listener.settle(subscribed, min(CONFIRM_WAIT_S, self.bound.current() - time.monotonic()))
            name_reply_channel(outgoing, self.listener.reply_channel)
            if outgoing:
                pipe = self.broker.pipeline(transaction=False)
                queue_sends(pipe, outgoing)
                pipe.execute()
        except BaseException as exc:
            # Nothing was queued (or nobody can tell): a claim left behind would make
            # every resubmit of these inputs wait for a job that may not exist.
            if claimed:
                self._release_claims(claimed, f"{type(exc).__name__}: {exc}")
            raise
        for plan in live:
            self.hits.remember_hits(plan.specs, plan.t0)
        return out

    def _claim(self, plans: list[ChunkPlan], claimed: list[str]) -> None:
        """Check and claim the plans' ids, one script call per model variant; ``claimed``
        grows by the ids this client is now to send."""
        groups: dict[tuple[str, bool], list[ChunkPlan]] = {}
        for plan in plans:
            groups.setdefault((plan.info.key, plan.no_cache), []).append(plan)
        for (key, no_cache), members in groups.items():
            ids = [jid for plan in members for jid in plan.ids]
            if no_cache:
                self.claims.claim_fresh(ids, key)
            else:
                answers = self.claims.check_and_claim(ids, key)
            at = 0
            for plan in members:
                n = len(plan.ids)
                plan.read_claims(plan.fresh_answers() if no_cache else answers[at : at + n])
                at += n
                if plan.redo:
                    plan.read_reclaim(self.claims.reclaim(plan.redo_seen(), key))
                claimed.extend(plan.send_ids)

    def _jobs_of(self, plan: ChunkPlan) -> list[Job]:
        info = plan.info
        return [
            Job(
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

    def _release_claims(self, ids: list[str], reason: str) -> None:
        try:
            self.claims.release(ids, reason)
        except Exception as exc:  # the result Redis is down too: the claims go stale instead
            log.warning("could not release %d claim(s) after a failed send: %s", len(ids), exc)

    def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        """What a readiness probe needs, never raising: whether each Redis answers, and the
        live workers and the model variants they serve (``ready``: Redis answers and at
        least one worker serves a model)."""
        deadline = self.bound.deadline(timeout)
        ok: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for name, client in (("broker", self.broker), ("results", self.backend)):
            try:
                self.bound.run(f"pinging the {name} Redis", client.ping, deadline)
                ok[name] = True
            except InferqError as exc:
                ok[name], errors[f"{name}_error"] = False, str(exc)
        beats = []
        if ok["results"]:
            try:
                raw = self.bound.run(
                    "reading worker heartbeats", lambda: self.backend.hgetall(C.WORKERS_KEY), deadline
                )
                beats = live_beats(raw)
            except InferqError as exc:
                errors["results_error"] = str(exc)
        return {**readiness(ok["broker"], ok["results"], beats), **errors}

    def model_stats(
        self, model: str, variant: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Queue depth, workers and recent queue/compute percentiles of a model variant."""
        deadline = self.bound.deadline(timeout)
        info = self._model_info(model, variant, deadline)
        reading = read_model_stats(info)
        return self.bound.run(
            "reading model stats", lambda: run_steps(reading, self.backend, self.broker), deadline
        )

    def handle(self, job: Job | str, *, owner: str | None = None, timeout: float | None = None) -> str:
        """An unguessable handle for a job, to hand out where its id would be guessable.

        A job id is the content hash of model, variant, version and input (that is how
        the cache works), so anyone who can guess an input can compute it. A handle is
        128 random bits mapped to the id in the result backend for as long as the cache
        keeps results; ``status``, ``result``, ``cancel`` take it in place of the id.
        Each call makes a new handle (hand each caller its own). ``owner`` (an opaque
        string, such as a hash of an API key) makes ``resolve`` refuse it to anyone else,
        and ``cancel`` through it leave alone a job other owners share. A handle made for a
        cache hit remembers it: ``result(handle)`` says ``cached`` with the hit's timing.
        """
        deadline = self.bound.deadline(timeout)
        if isinstance(job, Job):
            jid, hit = job.id, hit_of(job)
        else:
            jid, hit = self._resolve(check_job_id(job), deadline).job_id, None
        h = C.HANDLE_PREFIX + secrets.token_hex(16)
        value, ttl = encode_handle(jid, owner, hit), self.settings.cache_ttl_s

        def write() -> None:
            pipe = self.backend.pipeline(transaction=False)
            queue_handle(pipe, handle_key(h), owners_key(jid), value, owner, ttl)
            pipe.execute()

        self.bound.run("creating a job handle", write, deadline)
        return h

    def resolve(self, handle: str, *, owner: str | None = None, timeout: float | None = None) -> str:
        """The job id behind a handle; ``JobNotFound`` for a handle never made, expired, or
        made for another ``owner``."""
        return self._resolve(check_job_id(handle), self.bound.deadline(timeout), owner).job_id

    def _resolve(self, ref: str, deadline: float, owner: str | None = None) -> HandleRef:
        """A job id as given, or what a handle stands for."""
        if not ref.startswith(C.HANDLE_PREFIX):
            return HandleRef(ref)
        raw = self.bound.run("resolving a job handle", lambda: self.backend.get(handle_key(ref)), deadline)
        return decode_ref(ref, raw, owner)

    def cancel(self, job_id: str, *, owner: str | None = None, timeout: float | None = None) -> CancelOutcome:
        """Cancel a job no worker has started: it will not be computed, its status becomes
        ``cancelled`` and its waiters get ``JobCancelled``, with no result after that.

        A running or finished job is left as it is, and the outcome says so. A worker
        checks for cancels when it takes messages in; a job it took in before the cancel
        (it holds up to two batches ahead) may still be computed, but its result is
        discarded, never stored or published, and the job stays ``cancelled``.
        Submitting the same input again afterwards computes it. With ``owner`` (a handle's
        owner), a job that other owners also hold handles to is left alone: ``shared``.
        """
        deadline = self.bound.deadline(timeout)
        jid = self._resolve(check_job_id(job_id), deadline, owner).job_id
        record = StatusRecord.cancelled(jid).encode()
        keys, args = cancel_call(
            result_key(jid), inflight_key(jid), owners_key(jid), owner, record, self.settings.cache_ttl_s
        )
        outcome = self.bound.run("cancelling a job", lambda: self._cancel(keys=keys, args=args), deadline)
        return CANCEL_OUTCOMES[outcome.decode() if isinstance(outcome, bytes) else str(outcome)]

    def status(self, job_id: str, *, owner: str | None = None, timeout: float | None = None) -> JobStatus:
        """Where a job is; bounded like every call (``BrokerUnavailable`` past ``timeout``).

        ``unknown`` for an id never sent or whose result expired from the cache (a
        malformed id raises ``BadInput`` without asking Redis).
        """
        deadline = self.bound.deadline(timeout)
        jid = self._resolve(check_job_id(job_id), deadline, owner).job_id
        return self.bound.run("reading a job's status", lambda: self._status(jid), deadline)

    def _status(self, job_id: str) -> JobStatus:
        return self._state(job_id)[1]

    def _state(self, job_id: str) -> tuple[StatusRecord | None, JobStatus]:
        """The job's stored record (if any) and the status read from it and its claim
        (``producers/status.py``, shared with the ``AsyncClient``)."""
        reading = read_state(job_id, self.settings.visibility_timeout_s)
        return run_steps(reading, self.backend, self.broker)

    def result(
        self, job_id: str, *, owner: str | None = None, wait: bool = False, timeout: float | None = None
    ) -> Result:
        """A job's result by id or handle, or its error raised; with ``wait``, block until it is ready.

        Without ``wait``: ``JobNotFound`` for an unknown id, ``NotReady`` for a job that is
        queued or running. ``timeout`` bounds the call (with ``wait``, the wait: ``Timeout``).
        ``cached`` is True for a job this client was answered from the cache for (as its
        ``wait()`` said, with the same timing), or, by handle, for a handle made for a
        cache hit; otherwise the result is the job's own (``producers/cache_hits.py``).
        """
        ref = self._resolve(check_job_id(job_id), self.bound.deadline(None if wait else timeout), owner)
        jid = ref.job_id
        if wait:
            record, _ = self.listener.wait([jid], self._wait_bound(timeout))[jid]
        else:
            found, status = self.bound.run(
                "reading a job's result", lambda: self._state(jid), self.bound.deadline(timeout)
            )
            record = ready_record(jid, found, status)
        return self.hits.result_for(ref, record)

    def wait_for(
        self, job_ids: list[str], timeout: float | None, models: Iterable[str] = ()
    ) -> dict[str, Arrival]:
        """Block until each id has a ready status record (``Job.wait`` calls this); ``timeout``
        None is the settings' ``wait_timeout_s``. The ``Timeout`` names those of ``models``
        (``model:variant``, the jobs' own) that no live worker serves."""
        try:
            return self.listener.wait(job_ids, self._wait_bound(timeout))
        except Timeout as exc:
            raise self._explain(exc, models) from None

    def _explain(self, exc: Timeout, models: Iterable[str]) -> Timeout:
        """``exc``, naming the models no live worker serves (a fresh, briefly bounded read)."""
        models = list(models)
        if not models:
            return exc
        try:
            raw = self.bound.run(
                "reading worker heartbeats",
                lambda: self.backend.hgetall(C.WORKERS_KEY),
                self.bound.deadline(min(EXPLAIN_S, self.bound.default_s)),
            )
        except InferqError:
            return exc
        return explain_timeout(exc, models, served_by(raw))

    def _wait_bound(self, timeout: float | None) -> float:
        return self.settings.wait_timeout_s if timeout is None else timeout

    def wait_all(
        self, jobs: Iterable[Job], timeout: float | None = None, progress: Callable[[int], None] | None = None
    ) -> list[Result | InferqError]:
        """Wait for many jobs on one subscription; each entry is a result or its error, in order."""
        jobs = list(jobs)
        pending = [j for j in jobs if not j.done]
        settler = Settler(pending)
        read = 0

        def settle(jid: str, arrival: HeardArrival) -> None:
            # As heard, while the rest are still coming: a reply batch's records become
            # ``Result``s straight from their bytes.
            nonlocal read
            settler.settle(jid, arrival)
            read += 1
            if read % YIELD_EVERY == 0:
                # Let the listener thread have the GIL if it waits for it: held through a
                # whole batch of results, it heard the next batch up to a switch interval
                # (5 ms) late, and bulk latency rose by a third.
                time.sleep(0)

        try:
            self.listener.collect(
                list(settler.first), self._wait_bound(timeout), progress=progress, each=settle
            )
        except Timeout as exc:
            raise self._explain(exc, {j.key for j in pending}) from None
        return [j._outcome() for j in jobs]
