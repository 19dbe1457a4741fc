"""``inferq flower`` lists every model queue with its depth, whether a worker serves it or not.

A worker serves ``digits:fp32`` only; jobs for ``digits:int8`` are queued at three
priorities, so the depth Flower shows must add up all of kombu's priority lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, queue_depth, started_worker
from tests.helpers.flower import FlowerProcess

pytestmark = pytest.mark.integration

#: Jobs left in the unserved int8 queue, by priority (each priority is its own list).
QUEUED_INT8 = {"high": 2, "normal": 3, "low": 1}
INT8_DEPTH = sum(QUEUED_INT8.values())


@pytest.fixture(scope="module")
def own_settings(settings: Settings) -> Settings:
    return on_db(settings, 12)


@pytest.fixture(scope="module")
def fp32_worker(own_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(own_settings, ["digits:fp32"], tmp_path_factory.mktemp("broker") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def queued_int8(own_settings: Settings, fp32_worker: WorkerProcess) -> int:
    """Jobs for the variant no worker serves: they wait, spread over three priority lists."""
    x = np.load(own_settings.models_dir / "digits" / "data" / "heldout_x.npy")
    inputs = iter(x)
    with Client(own_settings) as client:
        for priority, n in QUEUED_INT8.items():
            for _ in range(n):
                client.submit("digits", next(inputs), variant="int8", priority=priority, no_cache=True)
        lists = [
            k
            for k in client.broker.scan_iter(match="inferq.digits.int8*")
            if client.broker.type(k) == b"list"
        ]
        assert len(lists) == len(QUEUED_INT8)  # the depth really spans several lists
        assert queue_depth(client.broker, "digits", "int8") == INT8_DEPTH
    return INT8_DEPTH


def start_flower(settings: Settings, folder: Path) -> FlowerProcess:
    folder.mkdir(parents=True, exist_ok=True)
    return FlowerProcess(settings, folder / "flower.log")


def broker_page_depths(flower: FlowerProcess) -> dict[str, int]:
    """The broker page's table as ``{queue: messages}``."""
    status, body = flower.get("/broker")
    assert status == 200
    rows = re.findall(r"<td>([^<]+)</td>\s*<td[^>]*>(\d+)</td>", body.decode())
    return {name: int(depth) for name, depth in rows}


def test_broker_page_and_api_list_an_unserved_queue_with_its_depth_over_all_priorities(
    own_settings: Settings, fp32_worker: WorkerProcess, queued_int8: int, tmp_path: Path
) -> None:
    flower = start_flower(own_settings, tmp_path)
    try:
        for depths in (flower.queue_depths(), broker_page_depths(flower)):
            assert depths.get("inferq.digits.int8") == queued_int8, depths  # no worker serves it
            assert depths.get("inferq.digits.fp32") == 0, depths  # served, empty
    finally:
        flower.stop()


def test_after_every_worker_stopped_flower_still_lists_announced_and_queued_model_queues(
    own_settings: Settings, fp32_worker: WorkerProcess, queued_int8: int, tmp_path: Path
) -> None:
    fp32_worker.stop()
    # A Flower started now gets no worker's active_queues at all (Flower alone would
    # show only the app's default queue).
    flower = start_flower(own_settings, tmp_path)
    try:
        depths = flower.queue_depths()
    finally:
        flower.stop()
    assert depths.get("inferq.digits.fp32") == 0, depths  # from the workers' announcement
    assert depths.get("inferq.digits.int8") == queued_int8, depths  # from its lists in the broker
    # Model queues neither announced nor holding messages are not made up.
    assert {q for q in depths if q.startswith("inferq.digits.")} == {
        "inferq.digits.fp32",
        "inferq.digits.int8",
    }
