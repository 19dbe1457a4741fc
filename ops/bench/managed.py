"""Worker processes that ``inferq bench --compare`` and ``inferq tune`` start themselves.

Comparing batching on/off or tuning ``max_batch_size`` / ``max_wait_ms`` / threads
means running the same load against workers configured differently, so these
commands start (and stop) one worker per configuration. They need the model's queue
to themselves: another worker on it would take part of the load and blur the
comparison, so they refuse to start while one is running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.local.processes import die_with_parent, stop_process
from ops.local.startup import wait_until_up, workers_serving
from ops.status import collect
from producers.client import Client
from tasks.errors import ConfigError


@dataclass(frozen=True)
class WorkerConfig:
    variant: str
    max_batch_size: int | None = None
    max_wait_ms: float | None = None
    threads: int | None = None

    def args(self) -> list[str]:
        out = []
        if self.max_batch_size is not None:
            out += ["--max-batch-size", str(self.max_batch_size)]
        if self.max_wait_ms is not None:
            out += ["--max-wait-ms", str(self.max_wait_ms)]
        if self.threads is not None:
            out += ["--threads", str(self.threads)]
        return out

    def label(self) -> str:
        parts = [self.variant]
        if self.max_batch_size is not None:
            parts.append("no batching" if self.max_batch_size == 1 else f"batch {self.max_batch_size}")
        if self.max_wait_ms is not None and self.max_batch_size != 1:  # nothing to wait for alone
            parts.append(f"wait {self.max_wait_ms:g} ms")
        if self.threads is not None:
            parts.append(f"{self.threads} thr")
        return ", ".join(parts)


def ensure_queue_is_ours(client: Client, model: str) -> None:
    busy = [
        w["hostname"]
        for w in collect(client)["workers"]
        if any(m.split(":")[0] == model for m in w["models"])
    ]
    if busy:
        raise ConfigError(
            f"workers already serve {model!r} ({', '.join(busy)}); stop them first: "
            "--compare and tune start their own workers and need the queue to themselves"
        )


def worker_command(key: str, cfg: WorkerConfig, hostname: str) -> list[str]:
    """``inferq worker`` for ``key`` (model:variant) with ``cfg``: always ONE process.

    The worker inherits the caller's environment (its Redis, models directory, threads),
    and ``INFERQ_CONCURRENCY`` is in it: an exported ``auto`` or a number would make each
    configuration a fleet of processes sized by the machine, and tune would compare fleets
    instead of the settings it varies. ``--concurrency 1`` on the command line wins.
    """
    return [sys.executable, "-m", "ops.cli", "worker", "--models", key, "--hostname", hostname,
            "--concurrency", "1", "--metrics-port", "0", *cfg.args()]  # fmt: skip


@contextmanager
def managed_worker(
    client: Client,
    model: str,
    cfg: WorkerConfig,
    *,
    timeout: float = 120.0,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Start ``inferq worker`` for ``model:variant`` with ``cfg``; stop it on exit.

    A worker that exits while starting is reported at once with the end of its log
    (``ConfigError``). The log is removed after a run that went well and kept, named
    on stderr, when the worker failed or the run did. ``stop`` set while the worker
    starts raises ``KeyboardInterrupt`` (see ``wait_until_up``).
    """
    hostname = f"bench-{uuid.uuid4().hex[:8]}@localhost"
    key = f"{model}:{cfg.variant}"
    cmd = worker_command(key, cfg, hostname)
    fd, name = tempfile.mkstemp(prefix="inferq-bench-worker-", suffix=".log")
    log = Path(name)
    with open(fd, "wb") as fh:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **client.settings.env(), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # a killed bench leaves no worker serving the queue
            # A session of its own: a terminal's Ctrl-C reaches the whole foreground process
            # group and would stop this worker mid-measurement; the command stops it itself.
            start_new_session=True,
        )
    started = False
    failed = True
    try:
        wait_until_up(
            proc,
            lambda: bool(workers_serving(client, [key], hostname)),
            what=f"the worker for {key}",
            log=log,
            timeout=timeout,
            stop=stop,
        )
        started = True
        time.sleep(0.2)
        yield hostname
    except KeyboardInterrupt:  # the user stopped the run: no failure of the worker's
        failed = proc.poll() is not None
        raise
    else:
        failed = proc.poll() is not None  # it died during the run
    finally:
        died = proc.poll()
        stop_process(proc)
        if not failed:
            log.unlink(missing_ok=True)
        elif started:  # a start-up failure's message already names the log
            how = f" (it exited with status {died} during the run)" if died is not None else ""
            print(f"the log of the worker for {key} is kept{how}: {log}", file=sys.stderr)
