"""The client a web backend imports: submit jobs, poll or wait for results.

Imports Celery, redis, numpy and msgpack only: never TensorFlow or LiteRT. Every call
that talks to Redis is bounded in time (``producers/bounded.py``): ``timeout``, or the
settings' ``client_timeout_s``; past it, or when Redis fails, it raises
``BrokerUnavailable``, never a redis or kombu exception.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from celery import Celery

from producers.bounded import CallBound
from producers.catalog import ModelCatalog
from producers.claims import CLAIMED, FOUND, SHARED, Claims
from producers.job import Job
from producers.limits import QueueDepthGuard
from producers.listener import Arrival, ResultListener
from producers.sender import Sender
from tasks import constants as C
from tasks import lua
from tasks.codec import encode_inputs
from tasks.connections import redis_client
from tasks.errors import BadInput, InferqError, JobNotFound, NotReady, PayloadTooLarge
from tasks.keys import (
    check_job_id,
    handle_key,
    inflight_key,
    job_id,
    queue_name,
    random_job_id,
    result_key,
)
from tasks.kombu_layout import UNACKED_INDEX, check_transport_options, queue_lists
from tasks.schema import CancelOutcome, JobStatus, ModelInfo
from tasks.settings import Settings, redact_url
from tasks.validation import cast_inputs, validate_inputs
from tasks.wire import Claim, Result, StatusRecord, WorkerBeat

log = logging.getLogger(__name__)


def _as_array(x: Any, name: str) -> np.ndarray:
    """An input as an array; a ragged nested list is ``BadInput``, never numpy's ValueError."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"input {name!r}: expected a rectangular array of numbers ({exc})") from None


#: tasks/lua/cancel.lua's answers.
_CANCEL_OUTCOMES = {
    "cancelled": CancelOutcome.CANCELLED,
    "already": CancelOutcome.ALREADY_CANCELLED,
    "running": CancelOutcome.RUNNING,
    "finished": CancelOutcome.FINISHED,
    "unknown": CancelOutcome.UNKNOWN,
}


class Client:
    """Submits inference jobs to the workers through Redis and reads their results."""

    def __init__(self, settings: Settings, *, app: Celery | None = None) -> None:
        self.settings = settings
        bound = settings.client_timeout_s
        self.sender = Sender(settings, app)
        self.app = self.sender.app
        # An app handed in may carry transport options that move kombu's keys.
        check_transport_options(self.app.conf.broker_transport_options or {}, settings.broker_url)
        # Two tries of half the bound each: a thread stuck on a hung Redis is freed about
        # when its caller has been answered.
        self.backend = redis_client(settings.result_backend, settings, socket_timeout=bound / 2, retries=1)
        self.broker = redis_client(settings.broker_url, settings, socket_timeout=bound / 2, retries=1)
        self.bound = CallBound(
            bound, f"broker {redact_url(settings.broker_url)}, results {redact_url(settings.result_backend)}"
        )
        self.claims = Claims(self.backend, settings.inflight_ttl_s, settings.visibility_timeout_s)
        #: Watches submitted jobs so results are seen (and timed) as they arrive.
        self.listener = ResultListener(self.backend)
        self.catalog = ModelCatalog(self.backend, settings.models_dir)
        self.depth_guard = QueueDepthGuard(self.broker, settings.max_queue_depth)
        self._cancel = self.backend.register_script(lua.source("revoked", "cancel"))

    @classmethod
    def from_env(cls) -> Client:
        return cls(Settings.from_env())

    def close(self) -> None:
        """Stop the listener and close every connection this client opened."""
        self.bound.close()
        self.sender.close()
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
        if isinstance(x, Mapping):
            return {str(k): _as_array(v, str(k)) for k, v in x.items()}
        if len(info.inputs) != 1:
            raise BadInput(
                f"{info.key} has inputs {[s.name for s in info.inputs]}; pass a dict of name -> array"
            )
        return {info.inputs[0].name: _as_array(x, info.inputs[0].name)}

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
        return self.submit_many(
            model,
            [x],
            variant=variant,
            no_cache=no_cache,
            validate=validate,
            deadline_ms=deadline_ms,
            priority=priority,
            timeout=timeout,
        )[0]

    def submit_many(
        self,
        model: str,
        xs: Iterable[Any] | np.ndarray,
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

        ``xs`` is an array with a leading axis over inputs, or an iterable of inputs
        (arrays or ``{name: array}``). Each input keeps its own job id and cache entry;
        inputs already cached (or in flight) are not sent again. ``progress(n)`` is
        called as inputs are checked and sent. ``timeout`` bounds the whole call; without
        it, each message of ``chunk_size`` inputs gets the client's default bound.
        """
        if chunk_size < 1:
            raise BadInput(f"chunk_size must be >= 1, got {chunk_size}")
        if priority not in C.PRIORITIES:
            raise BadInput(f"priority must be one of {sorted(C.PRIORITIES)}, got {priority!r}")
        deadline = None if timeout is None else self.bound.deadline(timeout)
        info = self._model_info(model, variant, deadline or self.bound.deadline(None))
        prepared: list[tuple[dict[str, np.ndarray], bytes]] = []
        for x in xs:
            inputs = self.prepare_inputs(info, x)
            if validate:  # without it, the input goes exactly as given (the worker checks it)
                inputs = validate_inputs(cast_inputs(inputs, info.inputs), info.inputs)
            payload = encode_inputs(inputs)
            if len(payload) > self.settings.max_payload_bytes:
                raise PayloadTooLarge(
                    f"input payload is {len(payload)} bytes, over the limit of "
                    f"{self.settings.max_payload_bytes} bytes"
                )
            prepared.append((inputs, payload))
        if not prepared:
            return []
        jobs: list[Job] = []
        for start in range(0, len(prepared), chunk_size):
            chunk = prepared[start : start + chunk_size]
            jobs.extend(
                self.bound.run(
                    f"submitting {len(chunk)} input(s) to {info.key}",
                    lambda chunk=chunk: self._submit_chunk(  # type: ignore[misc]
                        info, chunk, no_cache=no_cache, deadline_ms=deadline_ms, priority=priority
                    ),
                    deadline or self.bound.deadline(None),
                )
            )
            if progress is not None:
                progress(len(chunk))
        return jobs

    def _submit_chunk(
        self,
        info: ModelInfo,
        chunk: list[tuple[dict[str, np.ndarray], bytes]],
        *,
        no_cache: bool,
        deadline_ms: float | None = None,
        priority: str = C.DEFAULT_PRIORITY,
    ) -> list[Job]:
        # Before claiming any id: a refused job must not leave an in-flight claim behind.
        self.depth_guard.check(queue_name(info.name, info.variant), len(chunk))
        t0 = time.time()
        if no_cache:
            ids = [random_job_id() for _ in chunk]
            # Claimed too (a random id is always free): its status reads "queued", and a
            # cancel finds it.
            self.claims.claim_fresh(ids, info.key)
            codes: list[list[Any]] = [[CLAIMED]] * len(chunk)
        else:
            ids = [job_id(info.name, info.variant, info.version, inputs) for inputs, _ in chunk]
            codes = self.claims.check_and_claim(ids, info.key)
        jobs: list[Job] = []
        send: list[tuple[str, bytes]] = []
        redo: list[tuple[int, str, bytes, bytes]] = []  # position in jobs, id, payload, doc read
        for jid, (_, payload), found in zip(ids, chunk, codes, strict=True):
            if found[0] == FOUND:
                record = StatusRecord.parse(found[1], jid)
                if record is not None and (record.cacheable or record.foreign):
                    # A record of a newer inferq is reported (IncompatibleVersion), never
                    # deleted and redone: during a rolling upgrade it is someone's result.
                    jobs.append(
                        Job(
                            jid,
                            self,
                            info.name,
                            info.variant,
                            t0,
                            cached=record.cacheable,
                            enqueued=False,
                            _record=record,
                            _arrived=time.time(),
                        )
                    )
                    continue
                if record is not None and not record.ready:
                    jobs.append(Job(jid, self, info.name, info.variant, t0, enqueued=False))  # shared
                    continue
                # A failure of the moment is not a cache hit: run it again (if still so).
                redo.append((len(jobs), jid, payload, found[1]))
                jobs.append(Job(jid, self, info.name, info.variant, t0))
                continue
            elif found[0] == SHARED:
                jobs.append(Job(jid, self, info.name, info.variant, t0, enqueued=False))  # shared
                continue
            send.append((jid, payload))
            jobs.append(Job(jid, self, info.name, info.variant, t0))
        if redo:
            won = self.claims.reclaim([(jid, doc) for _, jid, _, doc in redo], info.key)
            for (pos, jid, payload, _), claimed in zip(redo, won, strict=True):
                if claimed:
                    send.append((jid, payload))
                else:  # someone else ran it again meanwhile: share that run
                    jobs[pos] = Job(jid, self, info.name, info.variant, t0, enqueued=False)
        # A job run again (after a failure of the moment, or a cancel) must not be answered
        # with the record its previous run left in the listener.
        self.listener.forget([jid for jid, _ in send])
        # Watch before sending: a result can then never arrive unseen.
        self.listener.watch([j.id for j in jobs if not j.done])
        if send:
            deadline = None if deadline_ms is None else t0 + deadline_ms / 1e3
            try:
                self.sender.send(
                    self.broker, info, send, t0, cache=not no_cache, deadline_at=deadline, priority=priority
                )
            except BaseException as exc:
                # Nothing was queued: a claim left behind would make every resubmit of
                # these inputs wait for a job that does not exist.
                self._release_claims([jid for jid, _ in send], f"{type(exc).__name__}: {exc}")
                raise
        return jobs

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
        out: dict[str, Any] = {"broker": False, "results": False, "workers": [], "models": []}
        for name, client in (("broker", self.broker), ("results", self.backend)):
            try:
                self.bound.run(f"pinging the {name} Redis", client.ping, deadline)
                out[name] = True
            except InferqError as exc:
                out[f"{name}_error"] = str(exc)
        if out["results"]:
            try:
                raw = self.bound.run(
                    "reading worker heartbeats", lambda: self.backend.hgetall(C.WORKERS_KEY), deadline
                )
                now = time.time()
                beats = [
                    b for b in (WorkerBeat.parse(v) for v in raw.values()) if b is not None and b.alive(now)
                ]
                out["workers"] = sorted(b.hostname for b in beats)
                out["models"] = sorted({m for b in beats for m in b.models})
            except InferqError as exc:
                out["results_error"] = str(exc)
        out["ready"] = bool(out["broker"] and out["results"] and out["models"])
        return out

    def handle(self, job: Job | str, *, timeout: float | None = None) -> str:
        """An unguessable handle for a job, to hand out where its id would be guessable.

        A job id is the content hash of model, variant, version and input (that is how
        the cache works), so anyone who can guess an input can compute it. A handle is
        128 random bits mapped to the id in the result backend for as long as the cache
        keeps results; ``status``, ``result``, ``cancel`` take it in place of the id.
        Each call makes a new handle (hand each caller its own).
        """
        deadline = self.bound.deadline(timeout)
        jid = job.id if isinstance(job, Job) else self._resolve(check_job_id(job), deadline)
        h = C.HANDLE_PREFIX + secrets.token_hex(16)
        ttl = self.settings.cache_ttl_s
        self.bound.run(
            "creating a job handle",
            lambda: self.backend.set(handle_key(h), jid, ex=ttl),
            deadline,
        )
        return h

    def resolve(self, handle: str, *, timeout: float | None = None) -> str:
        """The job id behind a handle; ``JobNotFound`` for a handle never made, or expired."""
        return self._resolve(check_job_id(handle), self.bound.deadline(timeout))

    def _resolve(self, ref: str, deadline: float) -> str:
        """A job id as given, or the id behind a handle."""
        if not ref.startswith(C.HANDLE_PREFIX):
            return ref
        jid = self.bound.run("resolving a job handle", lambda: self.backend.get(handle_key(ref)), deadline)
        if jid is None:
            raise JobNotFound(f"no job has the handle {ref[:12]}...: never made, or expired with its result")
        return jid.decode() if isinstance(jid, bytes) else str(jid)

    def cancel(self, job_id: str, *, timeout: float | None = None) -> CancelOutcome:
        """Cancel a job no worker has started: it will not be computed, its status becomes
        ``cancelled`` and its waiters get ``JobCancelled``, with no result after that.

        A running or finished job is left as it is, and the outcome says so. A worker
        checks for cancels when it takes messages in; a job it took in before the cancel
        (it holds up to two batches ahead) may still be computed, but its result is
        discarded, never stored or published, and the job stays ``cancelled``.
        Submitting the same input again afterwards computes it.
        """
        deadline = self.bound.deadline(timeout)
        job_id = self._resolve(check_job_id(job_id), deadline)
        ttl = self.settings.cache_ttl_s
        record = StatusRecord.cancelled(job_id).encode()
        outcome = self.bound.run(
            "cancelling a job",
            lambda: self._cancel(keys=[result_key(job_id), inflight_key(job_id)], args=[record, ttl]),
            deadline,
        )
        return _CANCEL_OUTCOMES[outcome.decode() if isinstance(outcome, bytes) else str(outcome)]

    def status(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """Where a job is; bounded like every call (``BrokerUnavailable`` past ``timeout``).

        ``unknown`` for an id never sent or whose result expired from the cache (a
        malformed id raises ``BadInput`` without asking Redis).
        """
        deadline = self.bound.deadline(timeout)
        jid = self._resolve(check_job_id(job_id), deadline)
        return self.bound.run("reading a job's status", lambda: self._status(jid), deadline)

    def _status(self, job_id: str) -> JobStatus:
        return self._state(job_id)[1]

    def _state(self, job_id: str) -> tuple[StatusRecord | None, JobStatus]:
        """The job's stored record (if any) and the status read from it and its claim."""
        record = StatusRecord.parse(self.backend.get(result_key(job_id)), job_id)
        if record is not None and record.job_status() is not JobStatus.QUEUED:
            return record, record.job_status()
        claim = self.backend.get(inflight_key(job_id))
        if claim is not None:
            return record, JobStatus.LOST if self._lost(claim) else JobStatus.QUEUED
        return record, JobStatus.UNKNOWN

    def _lost(self, claim: bytes) -> bool:
        """A claim older than the visibility timeout whose queue is empty, with nothing held
        unacknowledged anywhere: its message is gone. (Any doubt reads as queued.)"""
        at, model_key = Claim.parse(claim), Claim.model_key(claim)
        if at is None or ":" not in model_key:
            return False
        sec, usec = self.backend.time()
        if sec + usec / 1e6 - at <= self.settings.visibility_timeout_s:
            return False
        model, _, variant = model_key.partition(":")
        pipe = self.broker.pipeline(transaction=False)
        for lst in queue_lists(queue_name(model, variant)):
            pipe.llen(lst)
        pipe.zcard(UNACKED_INDEX)
        return not any(pipe.execute())

    def result(self, job_id: str, *, wait: bool = False, timeout: float | None = None) -> Result:
        """A job's result by id, or its error raised; with ``wait``, block until it is ready.

        Without ``wait``: ``JobNotFound`` for an unknown id, ``NotReady`` for a job that is
        queued or running. ``timeout`` bounds the call (with ``wait``, the wait: ``Timeout``).
        """
        job_id = self._resolve(check_job_id(job_id), self.bound.deadline(None if wait else timeout))
        if wait:
            record, _ = self.listener.wait([job_id], self._wait_bound(timeout))[job_id]
        else:
            found, status = self.bound.run(
                "reading a job's result", lambda: self._state(job_id), self.bound.deadline(timeout)
            )
            if found is None or not found.ready:
                if status is JobStatus.UNKNOWN:
                    raise JobNotFound(f"job {job_id} is unknown: never sent, or its result expired")
                if status is JobStatus.LOST:
                    raise JobNotFound(
                        f"job {job_id} was lost in flight (its message is gone): submit its input again"
                    )
                raise NotReady(f"job {job_id} has no result yet (status {status.value})")
            record = found
        return record.to_result(cached=False)

    def wait_for(self, job_ids: list[str], timeout: float | None) -> dict[str, Arrival]:
        """Block until each id has a ready status record (``Job.wait`` calls this); ``timeout``
        None is the settings' ``wait_timeout_s``."""
        return self.listener.wait(job_ids, self._wait_bound(timeout))

    def _wait_bound(self, timeout: float | None) -> float:
        return self.settings.wait_timeout_s if timeout is None else timeout

    def wait_all(
        self, jobs: Iterable[Job], timeout: float | None = None, progress: Callable[[int], None] | None = None
    ) -> list[Result | InferqError]:
        """Wait for many jobs on one subscription; each entry is a result or its error, in order."""
        jobs = list(jobs)
        metas = self.listener.wait(
            [j.id for j in jobs if not j.done], self._wait_bound(timeout), progress=progress
        )
        out: list[Result | InferqError] = []
        for j in jobs:
            if not j.done:
                j._settle(*metas[j.id])
            try:
                out.append(j._finish())
            except InferqError as exc:
                out.append(exc)
        return out
