"""Worker start-up: load models once, announce them, consume their queues.

``inferq worker`` runs one Celery worker process per ``--concurrency`` (each with the
solo pool and its own interpreters), so a model is loaded exactly once per process,
after the process starts, and never per job. Loading fails fast, before the worker
connects, with the model's path in the message.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from celery import bootsteps, signals

from tasks.app import create_app
from tasks.connections import redis_client
from tasks.keys import queue_name
from tasks.kombu_layout import check_transport_options
from tasks.liveness import new_worker_id
from tasks.settings import Settings, redact_url
from workers.boot.announce import Heartbeat, announce_models
from workers.boot.control import handle_revoke, report_model_queues
from workers.boot.task import register_predict
from workers.broker.fetcher import Fetcher
from workers.broker.leases import Leases
from workers.models.registry import Registry
from workers.models.runtimes import Runtime, load_runtime
from workers.serving.consumer import BatchLimits, WorkerCore
from workers.serving.events import EventSink
from workers.serving.metrics import Metrics
from workers.serving.pipeline import Pipeline
from workers.serving.store import ResultWriter

log = logging.getLogger("inferq.worker")

#: Seconds between the Celery consumer's looks at this worker's control queue.
CONTROL_POLL_S = 10
#: Seconds between Celery's ``worker-heartbeat`` events (Flower's "online"). Under the
#: connections' 10 s health check, so an idle publisher is not PINGed before each beat.
EVENT_HEARTBEAT_S = 8.0
#: kombu's own checks of its long-lived control connections (pub/sub, BRPOP).
CONTROL_HEALTH_CHECK_S = 30


def rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def load_models(settings: Settings, specs: list[str] | None) -> dict[str, Runtime]:
    registry = Registry(settings.models_dir)
    runtimes: dict[str, Runtime] = {}
    for entry in registry.select(specs):
        t0 = time.perf_counter()
        runtimes[entry.key] = load_runtime(entry, threads=settings.threads)
        log.info(
            "loaded %s (%s, version %s) from %s in %.0f ms",
            entry.key,
            entry.info.runtime,
            entry.info.version,
            entry.path,
            (time.perf_counter() - t0) * 1e3,
        )
    return runtimes


def calibrate_compute_batch(runtime: Runtime, max_batch_size: int) -> None:
    """Let the runtime pick the batch size its model runs fastest per input at, up to
    the batches this worker forms (``LiteRTRuntime.calibrate_compute_batch``), and log it."""
    calibrate = getattr(runtime, "calibrate_compute_batch", None)
    if calibrate is None:
        return
    try:
        chosen = calibrate(max_batch_size)
    except Exception as exc:  # an optimization only: the model runs whole batches instead
        log.warning("timing %s's batch sizes failed (%s); continuing", runtime.info.key, exc)
        return
    if chosen is not None:
        measured: dict[int, float] = getattr(runtime, "calibration", {})
        timings = ", ".join(f"{b}: {t * 1e6:.0f}" for b, t in measured.items())
        log.info(
            "%s runs batches in calls of at most %d (µs per input by batch size: %s)",
            runtime.info.key,
            chosen,
            timings,
        )


def run_worker(
    settings: Settings,
    specs: list[str] | None,
    hostname: str | None = None,
    *,
    limits: BatchLimits | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run one worker process in the foreground until it is told to stop."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Until Celery installs its own handlers, SIGTERM means a clean exit (finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    limits = limits or BatchLimits()
    runtimes = load_models(settings, specs)
    infos = [r.info for r in runtimes.values()]
    for r in runtimes.values():
        warmup = getattr(r, "warmup", None)
        if warmup is not None:  # allocate batch buffers now, not on the first jobs
            try:
                warmup(limits.max_batch_size or r.info.max_batch_size)
            except Exception as exc:  # an optimization only: the first batch pays instead
                log.warning("warm-up of %s failed (%s); continuing", r.info.key, exc)
        calibrate_compute_batch(r, limits.max_batch_size or r.info.max_batch_size)
    hostname = hostname or f"inferq-{os.getpid()}@{socket.gethostname()}"
    app = create_app(settings)
    # This worker's Celery consumer reads only its control queue, so kombu's periodic
    # restore of unacknowledged messages (every 100 s) has nothing of its own to do; for
    # model queues it would race our leases, since it does not re-check a message's age
    # before restoring it. The leases' sweep (workers/broker/leases.py) covers those; kombu
    # still sweeps once as the consumer starts.
    # Its BRPOP on that control queue comes back every 10 s instead of every second (an
    # idle worker's commands count: issue 18 allows 2/s): control commands come by
    # pub/sub and the queue is only for direct messages, so nothing waits on it.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_restore_throttle": 10**9,
        "polling_interval": CONTROL_POLL_S,
        "health_check_interval": CONTROL_HEALTH_CHECK_S,
    }
    check_transport_options(app.conf.broker_transport_options, settings.broker_url)
    pipeline = Pipeline(runtimes, max_payload_bytes=settings.max_payload_bytes)
    register_predict(app, pipeline)
    backend = redis_client(settings.result_backend, settings)
    broker = redis_client(settings.broker_url, settings)
    queues = sorted({queue_name(i.name, i.variant) for i in infos})
    report_model_queues(queues)  # inspect active_queues / Flower name them as served
    handle_revoke(backend, settings.cache_ttl_s)  # Celery's revoke cancels like Client.cancel
    # One id per process start, recorded as the holder of every message this process
    # takes and kept alive by its heartbeat lease (workers/broker/leases.py): a restarted
    # worker never inherits a dead one's lease.
    worker_id = new_worker_id()
    # Room for one batch computing and the next one filling, and no more: a worker
    # never pulls the whole queue into memory. In jobs: the fetcher holds that many
    # single-job messages, but only four bulk messages (``message_limit``).
    max_batch = max(limits.max_batch_size or i.max_batch_size for i in infos)
    capacity = max(settings.prefetch, 2 * max_batch)
    port = settings.metrics_port if metrics_port is None else metrics_port
    metrics = Metrics(port or None, redis_client=backend, address=settings.metrics_address)
    core = WorkerCore(
        pipeline,
        ResultWriter(backend, settings.cache_ttl_s, started_ttl_s=settings.inflight_ttl_s),
        lambda on_deliveries: Fetcher(
            broker,
            queues,
            on_deliveries,
            capacity=capacity,
            max_message_bytes=settings.max_message_bytes,
            leases=Leases(
                broker,
                settings.visibility_timeout_s,
                on_taken_back=metrics.taken_back,
                worker_id=worker_id,
                lease_s=settings.lease_s,
            ),
            worker_id=worker_id,
        ),
        EventSink(app, hostname),
        limits=limits,
        metrics=metrics,
        give_up_s=settings.visibility_timeout_s,
    )
    announce_models(backend, infos)
    heartbeat = Heartbeat(
        backend,
        hostname,
        infos,
        lambda: {
            **metrics.snapshot(),
            "rss_bytes": rss_bytes(),
            # fetch-script calls that looked at the queues, and those that found nothing
            "fetches": core.fetcher.fetches,
            "empty_fetches": core.fetcher.empty_fetches,
        },
    )
    app.steps["worker"].add(_job_path_step(core, heartbeat))
    # On SIGTERM/SIGINT stop taking messages at once; the bootstep's stop (later in
    # Celery's shutdown) finishes the batch in hand and puts the rest back.
    signals.worker_shutting_down.connect(lambda **_: core.fetcher.stop(), weak=False)
    log.info(
        "worker %s (id %s, lease %g s): broker %s, queues %s",
        hostname,
        worker_id,
        settings.lease_s,
        redact_url(settings.broker_url),
        queues,
    )
    try:
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                # Celery's own consumer reads only this worker's control queue; the
                # model queues are read by the fetcher.
                f"--queues=inferq.worker.{hostname}",
                f"--hostname={hostname}",
                f"--loglevel={settings.log_level}",
                "--task-events",
                # Flower counts a worker offline after two missed beats of the interval
                # the beat itself announces; a slow beat keeps an idle worker quiet.
                f"--heartbeat-interval={EVENT_HEARTBEAT_S:g}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        heartbeat.stop()
        core.shutdown()


def _job_path_step(core: WorkerCore, heartbeat: Heartbeat) -> type[bootsteps.StartStopStep]:
    """A worker bootstep (Celery's documented extension point) that runs ``core``.

    The job path and the heartbeat start when Celery says the worker is ready
    (``worker_ready``), not when this step starts: Celery's consumer takes another
    second or two to connect after that, and messages taken then would wait in this
    process, batches computed then ran several times slower beside the start-up, while
    other workers could have run them. So a worker is listed as up only once it
    consumes (and once Celery handles SIGTERM as a warm shutdown).
    """

    stopped = threading.Event()

    def ready(**_: object) -> None:  # idempotent: a consumer that reconnects is ready again
        if stopped.is_set():  # never restarted by a late signal once shut down
            return
        core.start()
        if not heartbeat.is_alive():
            heartbeat.start()

    signals.worker_ready.connect(ready, weak=False)

    class JobPath(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.components:Pool",)

        def stop(self, worker: object) -> None:
            stopped.set()
            heartbeat.stop()
            core.shutdown()

        def terminate(self, worker: object) -> None:
            stopped.set()
            heartbeat.stop()
            core.shutdown()

    return JobPath


def supervise(settings: Settings, specs: list[str] | None, concurrency: int, extra_args: list[str]) -> int:
    """Run ``concurrency`` worker processes; forward SIGINT/SIGTERM; restart the dead.

    Separate processes rather than Celery's prefork pool: each needs its own
    interpreters and (later) its own batcher, and a crash of one must not take the
    others' buffered jobs with it.
    """
    host = socket.gethostname()
    argv_models = ["--models", ",".join(specs)] if specs else []

    def spawn(i: int) -> subprocess.Popen[bytes]:
        # Each process gets its own metrics port: base, base + 1, ...
        port = ["--metrics-port", str(settings.metrics_port + i)] if settings.metrics_port else []
        cmd = [
            sys.executable, "-m", "workers", "--concurrency", "1",
            "--hostname", f"inferq{i}-{os.getpid()}@{host}", *argv_models, *port, *extra_args,
        ]  # fmt: skip
        return subprocess.Popen(cmd, env={**os.environ, **settings.env()})

    children = {i: spawn(i) for i in range(concurrency)}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in children.values():
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        time.sleep(0.5)
        if stopping:
            return max((p.wait() for p in children.values()), default=0)
        for i, p in list(children.items()):
            if p.poll() is not None and not stopping:  # never respawn once told to stop
                log.warning("worker process %d exited with %s; restarting", p.pid, p.returncode)
                time.sleep(1.0)
                if not stopping:
                    children[i] = spawn(i)
