"""``inferq bench --compare`` and ``inferq tune`` start their own workers (no other worker here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from producers.client import Client
from tasks.settings import Settings
from tests.conftest import ROOT, WorkerProcess

pytestmark = pytest.mark.integration


def inferq(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**os.environ, **settings.env()}, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )  # fmt: skip


def test_compare_runs_the_same_load_per_configuration_side_by_side(settings: Settings) -> None:
    proc = inferq(settings, "bench", "--model", "digits:int8", "--concurrency", "4", "--duration", "1.5",
                  "--compare", "batching,cache", "--repeat-fraction", "0.5", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = {r["label"]: r for r in json.loads(proc.stdout)["runs"]}
    assert set(runs) == {"int8", "int8, cache off", "int8, no batching", "int8, no batching, cache off"}
    assert runs["int8, no batching"]["mean_batch"] == 1.0
    assert runs["int8, cache off"]["cache_hit_ratio"] == 0.0
    assert runs["int8"]["cache_hit_ratio"] > 0.2
    assert all(r["errors"] == 0 and r["completed"] > 10 for r in runs.values())


def test_compare_refuses_while_another_worker_serves_the_model(settings: Settings, tmp_path: Path) -> None:
    w = WorkerProcess(settings, ["digits:int8"], tmp_path / "w.log")
    try:
        with Client(settings) as c:
            w.wait_ready(c)
        proc = inferq(
            settings,
            "bench",
            "--model",
            "digits:int8",
            "--concurrency",
            "2",
            "--duration",
            "1",
            "--compare",
            "batching",
        )
        assert proc.returncode == 2
        assert "workers already serve 'digits'" in proc.stderr
    finally:
        w.stop()


def test_tune_recommends_the_fastest_config_within_budget_and_applies_it(
    settings: Settings, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(settings.models_dir / "digits", models / "digits")
    s = settings.with_(models_dir=models)
    proc = inferq(s, "tune", "--model", "digits", "--p99-ms", "1000", "--variants", "int8", "--batch-sizes", "1,8",
                  "--concurrency", "1,4", "--duration", "1.5", "--apply", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["points"]) == 4
    best = result["recommended"]
    assert best["throughput"] == max(p["throughput"] for p in result["points"] if p["p99_ms"] <= 1000)
    meta = json.loads((models / "digits" / "int8" / "meta.json").read_text())
    assert meta["max_batch_size"] == best["max_batch_size"] and meta["tuned"]["p99_ms"] == best["p99_ms"]


def test_tune_says_so_when_nothing_fits_the_budget(settings: Settings) -> None:
    proc = inferq(settings, "tune", "--model", "digits", "--p99-ms", "0.001", "--variants", "int8", "--batch-sizes", "8",
                  "--concurrency", "2", "--duration", "1")  # fmt: skip
    assert proc.returncode == 1
    assert "no configuration kept p99 within 0.001 ms" in proc.stdout
