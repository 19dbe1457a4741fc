"""Shared fixtures: a private redis-server, example models, worker processes.

Every integration test runs against a ``redis-server`` this session starts on a free
port and stops at the end; no test touches a Redis it did not start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from ops.local.processes import die_with_parent, stop_process
from ops.local.redis_server import LocalRedis
from ops.status import wait_for_workers
from producers.client import Client
from tasks.keys import queue_name
from tasks.kombu_layout import queue_lists
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits example models, built once per test session (about 15 s)."""
    cached = os.environ.get("INFERQ_TEST_MODELS_DIR")
    if cached and (Path(cached) / "digits" / "fp32" / "meta.json").is_file():
        return Path(cached)
    out = tmp_path_factory.mktemp("models")
    subprocess.run(
        [sys.executable, "-m", "ops.cli", "models", "build-examples", "--only", "digits"],
        env={**os.environ, "INFERQ_MODELS_DIR": str(out)},
        check=True,
        cwd=ROOT,
    )
    return out


@pytest.fixture(scope="session")
def settings(redis_server: LocalRedis, models_dir: Path) -> Settings:
    return Settings(broker_url=redis_server.url, models_dir=models_dir, log_level="INFO")


class WorkerProcess:
    """An ``inferq worker`` child process with its log in a file."""

    def __init__(
        self, settings: Settings, models: list[str], log: Path, *extra: str, prefix: list[str] | None = None
    ) -> None:
        """``prefix`` runs the worker under another command (``ip netns exec NS``)."""
        self.settings = settings
        self.models = models
        self.log = log
        self.hostname: str | None = f"test{os.getpid()}-{time.monotonic_ns()}@localhost"
        cmd = [*(prefix or []), sys.executable, "-m", "ops.cli", "worker", "--models", ",".join(models)]
        cmd += extra
        if "--concurrency" not in extra:
            cmd += ["--hostname", self.hostname]
        else:
            self.hostname = None  # the supervisor names its processes
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,  # an interrupted test run leaves no worker behind
        )

    def wait_ready(self, client: Client, timeout: float = 90, count: int = 1) -> None:
        keys = [m for m in self.models if ":" in m] or [
            k for k in client.models(refresh=True) if k.split(":")[0] in self.models
        ]
        try:
            wait_for_workers(client, keys, timeout=timeout, count=count, hostname=self.hostname)
        except Exception:
            print(self.log.read_text()[-5000:])
            raise

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        self._fh.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def started_worker(settings: Settings, models: list[str], log: Path, *extra: str) -> WorkerProcess:
    """A worker process that is up and announced (its log in ``log``)."""
    w = WorkerProcess(settings, models, log, *extra)
    with Client(settings) as c:
        w.wait_ready(c)
    return w


def on_db(settings: Settings, db: int) -> Settings:
    """The same private Redis, another database: a module's queues and announcements
    start empty, whatever other test modules left in theirs."""
    url = urlunsplit(urlsplit(settings.broker_url)._replace(path=f"/{db}"))
    return settings.with_(broker_url=url, result_backend=url)


@pytest.fixture()
def own_redis() -> Iterator[LocalRedis]:
    """A redis-server of the test's own, for tests that read or clear whole keyspaces."""
    with LocalRedis() as server:
        yield server


def queue_depth(broker: redis.Redis, model: str, variant: str) -> int:
    """Jobs waiting in a model queue, over all its priority lists."""
    return sum(int(broker.llen(lst)) for lst in queue_lists(queue_name(model, variant)))


@pytest.fixture(scope="module")
def digits_worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker serving digits fp32, int8 and SavedModel (fp16 is left unserved on purpose)."""
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    w = started_worker(settings, ["digits:fp32", "digits:int8", "digits:savedmodel"], log)
    yield w
    w.stop()


@pytest.fixture()
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings) as c:
        yield c
