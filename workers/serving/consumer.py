"""A worker process's job path: fetch -> decode -> validate -> batch -> predict -> store -> ack.

The ``Fetcher`` thread takes messages from the model queues many at a time and hands
them here; each message is parsed and each job decoded and validated on that thread
(a bad one is answered at once, alone) and then queued for the ``Batcher``, whose
thread runs a group through the model, stores every job's state in one Redis round
trip, and only then acknowledges the messages. A bulk tensor message's jobs travel as
one block (decoded and checked once, split only into model-sized parts), and their
records, events and metrics are made per batch. Flower sees every job, single,
batched or bulk, through the task events sent here.

Why not celery-batches 0.11: it pins ``celery<5.7``, sends no task events (Flower
cannot see batched jobs) and leaves a failed batch's jobs PENDING. And why not a
Celery task strategy over kombu's own consumer: kombu's Redis transport costs a round
trip per message received and another per ack, which caps a worker at a few hundred
small jobs per second whatever the batching. Celery still runs the worker around
this (events, heartbeats, remote control, Flower's view of the worker); a worker
bootstep starts and stops the job path with it.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from tasks.codec import quote
from tasks.constants import PREDICT_TASK
from tasks.errors import InferqError
from tasks.schema import Timing
from tasks.wire import BulkTensor, encode_columns, encode_successes, reads_columns
from workers.broker.envelope import Rejected, read_message
from workers.broker.fetcher import Delivery, Fetcher
from workers.broker.retry import GaveUp, Persistent
from workers.broker.stored_inputs import StoredInputs, Unusable
from workers.serving.batcher import Batcher, Completer
from workers.serving.events import EventSink
from workers.serving.metrics import Metrics
from workers.serving.pipeline import Block, Computed, Pipeline
from workers.serving.store import Outcome, ResultWriter

log = logging.getLogger(__name__)

#: A model whose last batch took at least this long gets a ``STARTED`` state (and a
#: ``task-started`` event) for each job before it runs. Faster models skip it: the
#: state would live for a millisecond and cost a write per job.
TRACK_STARTED_MS = 20.0

#: How long a batch's task events may wait to go out with later batches' (one publish
#: for several batches under load); the completer sends them anyway once it is idle
#: that long. Flower shows a job this much later at most.
EVENTS_DELAY_S = 0.05


@dataclass
class BatchLimits:
    """Per-worker overrides of the models' own ``max_batch_size`` / ``max_wait_ms``."""

    max_batch_size: int | None = None
    max_wait_ms: float | None = None


@dataclass
class _Message:
    """A delivered message whose jobs are in flight: acked when the last one is stored."""

    delivery: Delivery
    remaining: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    refs: list[str] = field(default_factory=list)  # inputs stored beside the message
    #: Some job's outcome could not be stored: the message is given up, never acked.
    abandoned: bool = False
    #: The sender's reply channel: its jobs' records go there too, one message per batch.
    reply_to: str | None = None

    def finish(self, n: int = 1) -> bool:
        """Count ``n`` jobs done; True when this was the last (time to ack)."""
        with self.lock:
            self.remaining -= n
            return self.remaining == 0


@dataclass
class _Entry:
    job: Block
    msg: _Message


#: A parsed message: its jobs one by one (``(job id, task argument)``), or one bulk tensor.
_Parsed = tuple[_Message, list[tuple[str, Any]] | BulkTensor]


class WorkerCore:
    """Everything one worker process runs besides Celery's own consumer."""

    def __init__(
        self,
        pipeline: Pipeline,
        writer: ResultWriter,
        fetcher_factory: Any,
        events: EventSink,
        *,
        limits: BatchLimits | None = None,
        metrics: Metrics | None = None,
        give_up_s: float = 300.0,
    ) -> None:
        self.pipeline = pipeline
        self.writer = writer
        self.events = events
        self.limits = limits or BatchLimits()
        self.metrics = metrics or Metrics(None)
        self.batcher: Batcher[_Entry] = Batcher(self._run_batch)
        self.completer = Completer(on_idle=events.flush, idle_s=EVENTS_DELAY_S)
        self.fetcher: Fetcher = fetcher_factory(self.on_deliveries)
        self.inputs = StoredInputs(
            self.fetcher.client, pipeline.max_payload_bytes, max_tensor_bytes=self.fetcher.max_message_bytes
        )
        self.pid = os.getpid()
        self._stopping = threading.Event()
        #: Stores and acks outlast a Redis restart or a network cut of up to ``give_up_s``.
        self.persist = Persistent(give_up_s, self._stopping)
        self._started = False
        self._last_compute_ms: dict[str, float] = {}

    def start(self) -> None:
        if not self._started:
            self._started = True
            # Models, Celery and everything imported live as long as the process: out of
            # the collector's sight, a full collection scans only what jobs allocate
            # (collections were ~7% of the worker's GIL time under bulk load, py-spy).
            gc.freeze()
            self.completer.start()
            self.batcher.start()
            self.fetcher.start()

    def shutdown(self) -> None:
        """Finish the batch in hand; put everything else back on its queue."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self.fetcher.stop()
        self.fetcher.join(timeout=10)
        left = self.batcher.stop()
        self.completer.stop()  # stores and acks every batch already computed
        restore = list({id(e.msg): e.msg.delivery for e in left}.values())
        if restore:
            try:
                self.fetcher.restore(restore)
                log.info("returned %d buffered message(s) to the queue", len(restore))
            except Exception as exc:  # the visibility timeout will bring them back
                log.warning("could not return %d message(s) to the queue: %s", len(restore), exc)
        self.fetcher.stop_leases()
        self.events.close()

    # --- fetcher thread -------------------------------------------------------------

    def on_deliveries(self, deliveries: list[Delivery]) -> int:
        """Answer bad jobs, hand good ones to the batcher; returns how many jobs the
        deliveries held (one for a message not readable as jobs), which the fetcher
        weighs its next fetch by. Never raises: each delivery ends acknowledged, given up
        (it comes back), or held by its jobs in the batcher."""
        failures: list[tuple[Outcome, _Message]] = []
        done: list[_Message] = []
        parsed: list[_Parsed] = []
        jobs = len(deliveries)
        for d in deliveries:
            try:
                items, reply_to = read_message(d.raw)
            except Rejected as rej:
                # Not answerable as a job (no id) or refused unread: logged without the body.
                log.warning("rejected message from %s: %s", d.list_key, rej.reason)
                msg = _Message(d, remaining=0)
                if rej.job_id:
                    outcome = Outcome(rej.job_id, error=rej.error(rej.reason), reply_to=rej.reply_to)
                    failures.append((outcome, msg))
                done.append(msg)
                continue
            except Exception as exc:  # a parser bug must not poison the other messages
                log.error("could not read a message from %s (%s); dropped", d.list_key, type(exc).__name__)
                done.append(_Message(d, remaining=0))
                continue
            # One more than its jobs: this hold keeps the message from being acked (by a
            # batch finishing on the completer thread) before its early failures are stored.
            n = len(items.ids) if isinstance(items, BulkTensor) else len(items)
            parsed.append((_Message(d, remaining=n + 1, reply_to=reply_to), items))
            jobs += n - 1
        try:
            self._claim_inputs(parsed)
        except Exception as exc:
            log.error("%s; %d message(s) come back after the visibility timeout", _why(exc), len(deliveries))
            self.fetcher.abandon(deliveries)
            return jobs
        parsed = self._drop_cancelled(parsed)
        for msg, items in parsed:
            if isinstance(items, BulkTensor):
                self._take_bulk(msg, items, failures)
            else:
                self._take(msg, items, failures)
        if failures:
            outcomes = [o for o, _ in failures]
            try:
                self.persist.call("storing failures", lambda: self.writer.store(outcomes))
            except Exception as exc:
                log.error("%s; their messages come back after the visibility timeout", _why(exc))
                for _, msg in failures:
                    msg.abandoned = True
            else:
                for o in outcomes:
                    self._finish_event(o, 0.0)
                self.metrics.failed_early(outcomes)
                self.events.flush()
        done += [msg for msg, _ in parsed if msg.finish()]  # release the holds
        self._ack(done)
        return jobs

    def _ack(self, messages: list[_Message]) -> None:
        """Acknowledge finished messages (and drop their stored inputs); give up the abandoned."""
        ack = [m for m in messages if not m.abandoned]
        lost = [m.delivery for m in messages if m.abandoned]
        if ack:
            refs = [r for m in ack for r in m.refs]
            try:
                self.persist.call("acknowledging", lambda: self.fetcher.ack([m.delivery for m in ack], refs))
            except Exception as exc:  # the results are stored; a redelivery recomputes them
                log.error("%s; %d message(s) will be redelivered", _why(exc), len(ack))
                lost += [m.delivery for m in ack]
        if lost:
            self.fetcher.abandon(lost)

    def _drop_cancelled(self, parsed: list[_Parsed]) -> list[_Parsed]:
        """Leave out jobs cancelled while they were queued: never computed, and their
        messages acked with the rest. One round trip per fetch; if it fails, the jobs
        run, and the store still leaves their cancelled records alone."""
        ids = [
            jid
            for _, items in parsed
            for jid in (items.ids if isinstance(items, BulkTensor) else (j for j, _ in items))
        ]
        try:
            cancelled = self.writer.cancelled(ids)
        except Exception as exc:
            log.warning("could not check %d job(s) for cancels (%s); running them", len(ids), _why(exc))
            return parsed
        if not cancelled:
            return parsed
        out: list[_Parsed] = []
        for msg, items in parsed:
            if isinstance(items, BulkTensor):
                before = len(items.ids)
                rows = items.rows if items.rows is not None else list(range(before))
                kept = [(r, jid) for r, jid in zip(rows, items.ids, strict=True) if jid not in cancelled]
                items.count = items.rows_sent
                items.rows = [r for r, _ in kept]
                items.ids = [jid for _, jid in kept]
                if len(kept) < before:
                    msg.finish(before - len(kept))  # never the last: on_deliveries holds it
                out.append((msg, items) if kept else (msg, []))
                continue
            keep = [(jid, raw) for jid, raw in items if jid not in cancelled]
            if len(keep) < len(items):
                msg.finish(len(items) - len(keep))  # never the last: on_deliveries holds it
            out.append((msg, keep))
        self.events.send_jobs("task-revoked", sorted(cancelled), terminated=False, signum=None, expired=False)
        self.events.flush()
        log.info("skipped %d cancelled job(s)", len(cancelled))
        return out

    def _claim_inputs(self, parsed: list[_Parsed]) -> None:
        """Fetch inputs that travelled beside their messages, all in one round trip."""
        wanted: list[dict[str, Any]] = []
        bulks: list[BulkTensor] = []
        for msg, items in parsed:
            if isinstance(items, BulkTensor):
                refs = self.inputs.tensor_refs(items)
                if refs:
                    bulks.append(items)
                    msg.refs.extend(refs)
                continue
            for _, raw in items:
                ref = self.inputs.ref(raw)
                if ref is not None:
                    wanted.append(raw)
                    msg.refs.append(ref)
        if wanted or bulks:
            self.persist.call("reading stored inputs", lambda: self.inputs.fill(wanted, bulks))

    def _take(
        self,
        msg: _Message,
        items: list[tuple[str, Any]],
        failures: list[tuple[Outcome, _Message]],
    ) -> None:
        answered = 0
        for jid, raw in items:
            self.events.send(
                "task-received", jid, name=PREDICT_TASK, args=_describe(raw), kwargs="{}", retries=0
            )
            try:
                stored = raw.get("inputs") if isinstance(raw, dict) else None
                if isinstance(stored, Unusable):
                    raise stored.error
                prepared = self.pipeline.prepare(jid, raw, msg.delivery.received_at)
            except InferqError as exc:
                failures.append((Outcome(jid, error=exc, key=self._label(raw), reply_to=msg.reply_to), msg))
                answered += 1
                continue
            self._queue_block(prepared.as_block(), msg)
        if answered:
            msg.finish(answered)  # never the last: on_deliveries still holds the message

    def _take_bulk(self, msg: _Message, bulk: BulkTensor, failures: list[tuple[Outcome, _Message]]) -> None:
        """A bulk tensor message's jobs: decoded and checked at once; rows that fail alone
        are answered alone, the rest queued as a block."""
        if not bulk.ids:
            return
        label = self._label({"model": bulk.common.model, "variant": bulk.common.variant})
        # What task-received would say, for Flower: sent now for jobs answered now; the
        # others carry it in their last event (half the events of a bulk message).
        received = {
            "name": PREDICT_TASK,
            "args": f"({quote(bulk.common.model)}, {quote(bulk.common.variant)})",
            "kwargs": "{}",
            "retries": 0,
        }
        try:
            block, failed = self.pipeline.prepare_bulk(bulk, msg.delivery.received_at)
        except InferqError as exc:
            self.events.send_jobs("task-received", bulk.ids, timestamp=msg.delivery.received_at, **received)
            failures.extend(
                (Outcome(jid, error=exc, key=label, reply_to=msg.reply_to), msg) for jid in bulk.ids
            )
            msg.finish(len(bulk.ids))  # never the last: on_deliveries still holds the message
            return
        if failed:
            self.events.send_jobs(
                "task-received", list(failed), timestamp=msg.delivery.received_at, **received
            )
            failures.extend(
                (Outcome(jid, error=err, key=label, reply_to=msg.reply_to), msg)
                for jid, err in failed.items()
            )
            msg.finish(len(failed))
        if block is not None:
            block.announce = {**received, "received": msg.delivery.received_at}
            self._queue_block(block, msg)

    def _queue_block(self, block: Block, msg: _Message) -> None:
        """Hand a block to the batcher, in parts of at most the model's batch size."""
        info = block.runtime.info
        max_size = self.limits.max_batch_size or info.max_batch_size
        max_wait = self.limits.max_wait_ms if self.limits.max_wait_ms is not None else info.max_wait_ms
        key: Hashable = block.batch_key
        for part in block.split(max_size):
            self.batcher.put(
                key, _Entry(part, msg), max_size=max_size, max_wait_s=max_wait / 1e3, rows=part.rows
            )

    def _label(self, raw: Any) -> str:
        """The job's model:variant for metrics, if served (senders don't pick labels)."""
        if isinstance(raw, dict):
            key = f"{raw.get('model')}:{raw.get('variant')}"
            if key in self.pipeline.runtimes:
                return key
        return "unknown"

    # --- batcher thread -------------------------------------------------------------

    def _run_batch(self, entries: list[_Entry]) -> None:
        """Compute one batch; everything after the model call goes to the completer thread,
        so the next batch starts at once while this one's results are stored."""
        blocks = [e.job for e in entries]
        key = blocks[0].runtime.info.key
        if self._last_compute_ms.get(key, TRACK_STARTED_MS) >= TRACK_STARTED_MS:
            ids = [jid for b in blocks for jid in b.ids]
            self.completer.submit(lambda: self._mark_started(ids))
        try:
            computed: Computed | None = self.pipeline.compute(blocks)
            error: InferqError | None = None
            assert computed is not None
            self._last_compute_ms[key] = (computed.compute_done_at - computed.started_at) * 1e3
        except InferqError as exc:
            computed, error = None, exc
        self.completer.submit(lambda: self._complete(entries, computed, error))

    def _mark_started(self, ids: list[str]) -> None:
        self.writer.started(ids)
        self.events.send_jobs("task-started", ids, pid=self.pid)
        self.events.flush()

    def _complete(self, entries: list[_Entry], computed: Computed | None, error: InferqError | None) -> None:
        """On the completer thread: store, then acknowledge, then tell Flower and metrics,
        each once per batch (one record per job, built from one template per block)."""
        blocks = [e.job for e in entries]
        key = blocks[0].runtime.info.key
        rows = sum(b.rows for b in blocks)
        parts = computed.parts() if computed is not None else []
        try:
            if computed is not None:
                info = blocks[0].runtime.info
                ids = [jid for b in blocks for jid in b.ids]
                docs = [
                    doc
                    for block, outputs, timing in parts
                    for doc in encode_successes(
                        block.ids, info.name, info.variant, info.version, outputs, timing
                    )
                ]
                # Aligned with ``ids``: each job's reply channel is its message's.
                replies = [e.msg.reply_to for e in entries for _ in e.job.ids]
                columns = _reply_columns(entries, parts, docs, info.name, info.variant, info.version)
                self.persist.call(
                    f"storing a batch of {rows}",
                    lambda: self.writer.store_encoded(ids, docs, replies, columns),
                )
            else:
                assert error is not None
                outcomes = [
                    Outcome(jid, error=error, key=key, reply_to=e.msg.reply_to)
                    for e in entries
                    for jid in e.job.ids
                ]
                self.persist.call(f"storing a batch of {rows}", lambda: self.writer.store(outcomes))
            stored = True
        except Exception as exc:
            # Not stored: not acked either; the messages come back after the visibility timeout.
            log.error("%s; leaving it unacknowledged", _why(exc))
            stored = False
        now = time.time()
        finished: list[_Message] = []
        for e in entries:
            if stored:
                extra = e.job.announce or {}
                if error is None:
                    self.events.send_jobs(
                        "task-succeeded",
                        e.job.ids,
                        result="<outputs>",
                        runtime=now - e.job.received_at,
                        **extra,
                    )
                else:
                    self.events.send_jobs(
                        "task-failed", e.job.ids, exception=_exception(error), traceback=None, **extra
                    )
            else:
                e.msg.abandoned = True
            if e.msg.finish(e.job.rows):
                finished.append(e.msg)
        self._ack(finished)
        if stored:
            self.events.flush(older_than_s=EVENTS_DELAY_S)
            self.metrics.batch_done(key, [(b.rows, t) for b, _, t in parts], rows, error is None)

    def _finish_event(self, o: Outcome, runtime_s: float) -> None:
        if o.error is None:
            self.events.send("task-succeeded", o.job_id, result="<outputs>", runtime=runtime_s)
        else:
            self.events.send("task-failed", o.job_id, exception=_exception(o.error), traceback=None)


def _reply_columns(
    entries: list[_Entry],
    parts: list[tuple[Block, dict[str, Any], Timing]],
    docs: list[bytes],
    model: str,
    variant: str,
    version: str,
) -> dict[str, bytes]:
    """Each reply channel that reads columns and was sent a block of several jobs, and its
    version 2 ``ReplyBatch``: those blocks as columns, its lone jobs by their records
    (``docs``, aligned with the blocks' ids; ``parts`` is in ``entries``' order). A
    channel of lone jobs only is left to ``store.lua``'s version 1, as cheap to read."""
    blocks: dict[str, list[tuple[list[str], dict[str, Any], Timing]]] = {}
    singles: dict[str, list[tuple[str, bytes]]] = {}
    at = 0
    for e, (block, outputs, timing) in zip(entries, parts, strict=True):
        channel = e.msg.reply_to
        if channel is not None and reads_columns(channel):
            if block.rows > 1:
                blocks.setdefault(channel, []).append((block.ids, outputs, timing))
            else:
                singles.setdefault(channel, []).extend(
                    zip(block.ids, docs[at : at + block.rows], strict=True)
                )
        at += block.rows
    return {ch: encode_columns(model, variant, version, bs, singles.get(ch, ())) for ch, bs in blocks.items()}


def _exception(error: InferqError) -> str:
    """A job's error as Flower shows it."""
    return f"{type(error).__name__}({error.message!r})"


def _why(exc: Exception) -> str:
    """A failed Redis call for the log: our own message, or the exception's type and text."""
    return str(exc) if isinstance(exc, GaveUp) else f"{type(exc).__name__}: {exc}"


def _describe(raw: Any) -> str:
    """What Flower shows as the job's args: model and variant, never the input payload."""
    if isinstance(raw, dict):
        return f"({quote(raw.get('model'))}, {quote(raw.get('variant'))})"
    return "(<malformed>)"
