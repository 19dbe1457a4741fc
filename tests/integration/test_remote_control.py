"""Celery remote control against a real inferq worker: Flower's worker page and API,
and the plain ``celery -A tasks.celery_app inspect ...`` command.

Every reply must decode: a worker's ``stats`` reply carries integer map keys (the
broker's ``socket_keepalive_options``), which msgpack, the task serializer, refuses
on decode; the app's remote control speaks JSON (``tasks.app.JsonControl``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tasks.settings import Settings
from tests.conftest import ROOT, WorkerProcess, on_db, started_worker
from tests.helpers.flower import FlowerProcess

pytestmark = pytest.mark.integration

MODELS = ["digits:fp32", "digits:int8"]
MODEL_QUEUES = {"inferq.digits.fp32", "inferq.digits.int8"}


@pytest.fixture(scope="module")
def own_settings(settings: Settings) -> Settings:
    return on_db(settings, 11)


@pytest.fixture(scope="module")
def worker(own_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(own_settings, MODELS, tmp_path_factory.mktemp("control") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def flower(
    own_settings: Settings, worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlowerProcess]:
    f = FlowerProcess(own_settings, tmp_path_factory.mktemp("control") / "flower.log")
    yield f
    log = f.stop()
    assert "strict_map_key" not in log


def celery_inspect(settings: Settings, command: str, hostname: str) -> Any:
    """``celery -A tasks.celery_app inspect COMMAND --json`` for one worker, as a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.celery_app", "inspect", command,
         "--destination", hostname, "--timeout", "20", "--json"],
        env={**os.environ, **settings.env()}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"inspect {command}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)[hostname]


def test_flower_worker_page_renders_the_stats_reply(flower: FlowerProcess, worker: WorkerProcess) -> None:
    assert worker.hostname
    status, body = flower.get(flower.worker_path(worker.hostname))
    html = body.decode()
    assert status == 200, f"worker page: HTTP {status}"  # was 404 "Unable to get stats"
    assert "Unable to get stats" not in html
    assert "celery.concurrency.solo:taskpool" in html.lower()  # the pool tab, from the stats reply
    for queue in MODEL_QUEUES:
        assert queue in html  # the queues tab, from the active_queues reply


def test_flower_workers_api_returns_the_decoded_stats_and_model_queues(
    flower: FlowerProcess, worker: WorkerProcess
) -> None:
    assert worker.hostname
    info = flower.get_json(f"/api/workers?refresh=1&workername={worker.hostname}")[worker.hostname]
    stats = info["stats"]
    assert stats["pid"] == worker.proc.pid
    # The reply that msgpack could not decode: keys come back as strings.
    assert stats["broker"]["transport_options"]["socket_keepalive_options"]
    assert {q["name"] for q in info["active_queues"]} >= MODEL_QUEUES


def test_celery_cli_pings_an_inferq_worker(own_settings: Settings, worker: WorkerProcess) -> None:
    assert worker.hostname
    assert celery_inspect(own_settings, "ping", worker.hostname) == {"ok": "pong"}


def test_celery_cli_reads_an_inferq_workers_stats(own_settings: Settings, worker: WorkerProcess) -> None:
    assert worker.hostname
    stats = celery_inspect(own_settings, "stats", worker.hostname)
    assert stats["pid"] == worker.proc.pid
    assert stats["pool"]["implementation"] == "celery.concurrency.solo:TaskPool"


def test_celery_cli_active_queues_names_the_model_queues_served(
    own_settings: Settings, worker: WorkerProcess
) -> None:
    assert worker.hostname
    queues = celery_inspect(own_settings, "active_queues", worker.hostname)
    names = {q["name"] for q in queues}
    # The model queues the fetcher reads, and Celery's own control queue; no other.
    assert names == MODEL_QUEUES | {f"inferq.worker.{worker.hostname}"}
    served = {q["name"]: q for q in queues}["inferq.digits.int8"]
    assert served["routing_key"] == "inferq.digits.int8"
    assert served["exchange"]["name"] == "inferq.digits.int8"
