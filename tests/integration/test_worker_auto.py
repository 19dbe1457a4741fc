"""``inferq worker --concurrency auto`` (or ``INFERQ_CONCURRENCY=auto``): a real worker
measures, chooses, says why, and serves."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db

pytestmark = pytest.mark.integration

PLAN = re.compile(
    r"--concurrency auto: (\d+) process(?:es)? x (\d+) threads?, (?:batch (\d+)|each model's own)"
)


def test_auto_concurrency_logs_its_plan_with_the_reason_and_serves_jobs(
    settings: Settings, tmp_path: Path
) -> None:
    mine = on_db(settings, 7).with_(metrics_port=0)
    w = WorkerProcess(mine, ["digits:fp32"], tmp_path / "w.log", "--concurrency", "auto")
    try:
        plans_then_serves(w, mine)
    finally:
        w.stop()


def test_inferq_concurrency_auto_in_the_environment_plans_like_the_option(
    settings: Settings, tmp_path: Path
) -> None:
    """No ``--concurrency`` given: ``INFERQ_CONCURRENCY=auto`` alone makes the plan."""
    mine = on_db(settings, 8).with_(metrics_port=0, auto_concurrency=True)
    assert mine.env()["INFERQ_CONCURRENCY"] == "auto"  # what the worker's environment carries
    w = WorkerProcess(mine, ["digits:fp32"], tmp_path / "w.log")
    w.hostname = None  # the supervisor names its processes (given more than one), as with the option
    try:
        plans_then_serves(w, mine)
    finally:
        w.stop()


def plans_then_serves(w: WorkerProcess, mine: Settings) -> None:
    """The worker logs an auto plan with its reason, and its processes serve a batch of jobs."""
    deadline = time.monotonic() + 90
    while not (found := PLAN.search(w.log_text())):
        assert w.alive, w.log_text()[-3000:]
        assert time.monotonic() < deadline, w.log_text()[-3000:]
        time.sleep(0.2)
    processes, threads, batch = int(found[1]), int(found[2]), found[3]
    line = next(ln for ln in w.log_text().splitlines() if "--concurrency auto:" in ln)
    # digits is light: one single-thread process per core, batching on, and the reason given.
    assert threads == 1 and processes >= 1 and batch is not None and int(batch) > 1, line
    assert "digits:fp32 is light" in line and "core" in line, line
    with Client(mine) as c:
        w.wait_ready(c, count=processes)
        x = np.load(mine.models_dir / "digits" / "data" / "heldout_x.npy")[:64]
        jobs = [c.submit("digits", xi, variant="fp32", no_cache=True) for xi in x]
        results = c.wait_all(jobs, timeout=60)
    assert all(not isinstance(r, Exception) for r in results), results
    assert max(r.timing.batch_size for r in results) <= int(batch)  # type: ignore[union-attr]
