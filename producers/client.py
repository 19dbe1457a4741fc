"""The client a web backend imports: submit jobs, poll or wait for results.

Imports Celery, redis, numpy and msgpack only: never TensorFlow or LiteRT.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from celery import Celery

from producers.catalog import ModelCatalog
from producers.claims import CLAIMED, FOUND, SHARED, Claims
from producers.job import Job
from producers.limits import QueueDepthGuard
from producers.listener import Arrival, ResultListener
from tasks import constants as C
from tasks.app import create_app
from tasks.codec import encode_inputs
from tasks.connections import redis_client
from tasks.errors import BadInput, InferqError, PayloadTooLarge
from tasks.keys import inflight_key, input_key, job_id, queue_name, random_job_id, result_key
from tasks.kombu_layout import check_transport_options
from tasks.schema import JobStatus, ModelInfo
from tasks.settings import Settings
from tasks.validation import validate_inputs
from tasks.wire import BulkItem, BulkMessage, Request, Result, StatusRecord


class Client:
    """Submits inference jobs to the workers through Redis and reads their results."""

    def __init__(self, settings: Settings, *, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(settings)
        # An app handed in may carry transport options that move kombu's keys.
        check_transport_options(self.app.conf.broker_transport_options or {}, settings.broker_url)
        self.backend = redis_client(settings.result_backend, settings)
        self.broker = redis_client(settings.broker_url, settings)
        self.claims = Claims(self.backend, settings.inflight_ttl_s, settings.visibility_timeout_s)
        #: Watches submitted jobs so results are seen (and timed) as they arrive.
        self.listener = ResultListener(self.backend)
        self.catalog = ModelCatalog(self.backend, settings.models_dir)
        self.depth_guard = QueueDepthGuard(self.broker, settings.max_queue_depth)

    @classmethod
    def from_env(cls) -> Client:
        return cls(Settings.from_env())

    def close(self) -> None:
        self.listener.close()
        self.backend.close()
        self.broker.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- models ---------------------------------------------------------------------

    def models(self, refresh: bool = False) -> dict[str, ModelInfo]:
        """Model variants announced by workers (``name:variant`` -> ``ModelInfo``)."""
        return self.catalog.models(refresh)

    def model_info(self, model: str, variant: str | None = None) -> ModelInfo:
        """What the workers (or, failing that, the local models folder) say of a model."""
        return self.catalog.info(model, variant)

    # --- jobs -----------------------------------------------------------------------

    def prepare_inputs(self, info: ModelInfo, x: Any) -> dict[str, np.ndarray]:
        """One input (array) or named inputs (mapping) as a name -> array dict."""
        if isinstance(x, Mapping):
            return {str(k): np.asarray(v) for k, v in x.items()}
        if len(info.inputs) != 1:
            raise BadInput(
                f"{info.key} has inputs {[s.name for s in info.inputs]}; pass a dict of name -> array"
            )
        return {info.inputs[0].name: np.asarray(x)}

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
    ) -> Job:
        """Send one input (without batch axis) or ``{input_name: array}`` to ``model``.

        Returns at once. A stored result for the same model, variant, version and
        input comes back as a finished, ``cached`` job, and nothing is enqueued; a job
        for the same input already queued or running is not enqueued again.
        ``priority`` (``high``, ``normal``, ``low``): a worker takes queued ``high``
        jobs before any ``normal`` one, and ``normal`` before ``low``.
        """
        return self.submit_many(
            model,
            [x],
            variant=variant,
            no_cache=no_cache,
            validate=validate,
            deadline_ms=deadline_ms,
            priority=priority,
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
    ) -> list[Job]:
        """Send many inputs, ``chunk_size`` per message; returns one ``Job`` per input, in order.

        ``xs`` is an array with a leading axis over inputs, or an iterable of inputs
        (arrays or ``{name: array}``). Each input keeps its own job id and cache entry;
        inputs already cached (or in flight) are not sent again. ``progress(n)`` is
        called as inputs are checked and sent.
        """
        if chunk_size < 1:
            raise BadInput(f"chunk_size must be >= 1, got {chunk_size}")
        if priority not in C.PRIORITIES:
            raise BadInput(f"priority must be one of {sorted(C.PRIORITIES)}, got {priority!r}")
        info = self.model_info(model, variant)
        prepared: list[tuple[dict[str, np.ndarray], bytes]] = []
        for x in xs:
            inputs = self.prepare_inputs(info, x)
            if validate:
                inputs = validate_inputs(inputs, info.inputs)
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
                self._submit_chunk(info, chunk, no_cache=no_cache, deadline_ms=deadline_ms, priority=priority)
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
        # Watch before sending: a result can then never arrive unseen.
        self.listener.watch([j.id for j in jobs if not j.done])
        if send:
            deadline = None if deadline_ms is None else t0 + deadline_ms / 1e3
            self._send(info, send, t0, cache=not no_cache, deadline_at=deadline, priority=priority)
        return jobs

    def _send(
        self,
        info: ModelInfo,
        items: list[tuple[str, bytes]],
        t0: float,
        *,
        cache: bool,
        deadline_at: float | None = None,
        priority: str = C.DEFAULT_PRIORITY,
    ) -> None:
        """One message: a single job under its own id, or a bulk message of many.

        Inputs over ``INLINE_INPUT_MAX_BYTES`` travel beside the message (claim check):
        a kombu message is JSON with a base64 body, which would make a 600 KB image
        cost 800 KB of base64 to encode, parse, copy into kombu's unacked index and
        decode again. The blob is stored in the broker's Redis first, then the message
        names it; the worker deletes it once the job's result is stored.
        """
        common = Request(
            model=info.name,
            variant=info.variant,
            version=info.version,
            enqueued_at=t0,
            cache=cache,
            deadline_at=deadline_at,
        )
        blobs: dict[str, bytes] = {}
        entries: list[BulkItem] = []
        # Inline inputs travel as base64 inside kombu's JSON: keep a bulk message well
        # under the workers' INFERQ_MAX_MESSAGE_BYTES, or they would answer it
        # PayloadTooLarge unread; past this budget inputs go beside the message.
        inline_left = self.settings.max_message_bytes // 2
        for jid, payload in items:
            if len(payload) > min(C.INLINE_INPUT_MAX_BYTES, inline_left):
                ref = input_key(jid, uuid.uuid4().hex[:8])
                blobs[ref] = payload
                entries.append(BulkItem(jid, inputs_ref=ref))
            else:
                entries.append(BulkItem(jid, inputs=payload))
                inline_left -= len(payload)
        if blobs:
            pipe = self.broker.pipeline(transaction=False)
            for ref, payload in blobs.items():
                pipe.set(ref, payload, ex=self.settings.cache_ttl_s)
            pipe.execute()
        body: dict[str, Any]
        if len(entries) == 1:
            task_id = entries[0].id
            common.inputs, common.inputs_ref = entries[0].inputs, entries[0].inputs_ref
            body = common.to_wire()
        else:
            body = BulkMessage(common, entries).to_wire()
            task_id = "bulk-" + uuid.uuid4().hex
        # argsrepr: Celery logs and shows a task's args; never the input payload.
        self.app.send_task(
            C.PREDICT_TASK,
            args=[body],
            task_id=task_id,
            queue=queue_name(info.name, info.variant),
            priority=C.PRIORITIES[priority],
            # Celery's own deadline header too, so Celery tools see it (workers read either).
            expires=None if deadline_at is None else datetime.fromtimestamp(deadline_at, UTC),
            argsrepr=f"({info.key!r}, {len(entries)} input(s))",
            kwargsrepr="{}",
        )

    def status(self, job_id: str) -> JobStatus:
        """Where a job is, without blocking."""
        record = StatusRecord.parse(self.backend.get(result_key(job_id)), job_id)
        if record is not None and record.job_status() is not JobStatus.QUEUED:
            return record.job_status()
        if self.backend.exists(inflight_key(job_id)):
            return JobStatus.QUEUED
        return JobStatus.PENDING

    def result(self, job_id: str, *, wait: bool = False, timeout: float | None = None) -> Result:
        """A job's result by id; with ``wait``, block until it is ready."""
        if wait:
            record, _ = self.listener.wait([job_id], timeout)[job_id]
        else:
            found = StatusRecord.parse(self.backend.get(result_key(job_id)), job_id)
            if found is None or not found.ready:
                raise InferqError(f"job {job_id} has no result yet (status {self.status(job_id).value})")
            record = found
        return record.to_result(cached=False)

    def wait_for(self, job_ids: list[str], timeout: float | None) -> dict[str, Arrival]:
        """Block until each id has a ready status record (``Job.wait`` calls this)."""
        return self.listener.wait(job_ids, timeout)

    def wait_all(
        self, jobs: Iterable[Job], timeout: float | None = None, progress: Callable[[int], None] | None = None
    ) -> list[Result | InferqError]:
        """Wait for many jobs on one subscription; each entry is a result or its error, in order."""
        jobs = list(jobs)
        metas = self.listener.wait([j.id for j in jobs if not j.done], timeout, progress=progress)
        out: list[Result | InferqError] = []
        for j in jobs:
            if not j.done:
                j._settle(*metas[j.id])
            try:
                out.append(j._finish())
            except InferqError as exc:
                out.append(exc)
        return out
