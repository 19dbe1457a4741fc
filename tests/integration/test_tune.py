"""``inferq bench --compare`` and ``inferq tune`` start their own workers (no other worker here)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.local.processes import ProcessRecord
from ops.local.redis_server import LocalRedis
from ops.status import collect
from producers.client import Client
from tasks.settings import Settings
from tests.conftest import ROOT, WorkerProcess

pytestmark = pytest.mark.integration


def inferq(
    settings: Settings, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**os.environ, **settings.env(), **(env or {})},
        capture_output=True, text=True, cwd=ROOT, timeout=timeout,
    )  # fmt: skip


def models_copy(settings: Settings, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(settings.models_dir / "digits", models / "digits")
    return models


def test_compare_batching_and_cache_names_each_configuration_and_defaults_to_repeated_inputs(
    settings: Settings, tmp_path: Path
) -> None:
    models = models_copy(settings, tmp_path)
    # As `tune --apply` may leave it: no batching in the variant's own settings.
    meta_path = models / "digits" / "int8" / "meta.json"
    meta_path.write_text(
        json.dumps({**json.loads(meta_path.read_text()), "max_batch_size": 1, "max_wait_ms": 0})
    )
    temp = tmp_path / "temp"  # where the command's temporary files (its workers' logs) go
    temp.mkdir()
    proc = inferq(settings.with_(models_dir=models), "bench", "--model", "digits:int8", "--concurrency", "8",
                  "--duration", "1.5", "--compare", "batching,cache", env={"TMPDIR": str(temp)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = [
        "int8, batch 32, wait 2 ms, cache on",
        "int8, batch 32, wait 2 ms, cache off",
        "int8, no batching, cache on",
        "int8, no batching, cache off",
    ]
    for name in names:  # each run's own table says which configuration it measured
        assert f"digits:int8  [{name}]  closed loop, 8 in flight, 1.5 s\n" in proc.stdout, proc.stdout
    assert "50% of jobs repeat an earlier input (the default when comparing the cache)" in proc.stdout
    rows = {}
    for line in proc.stdout.splitlines():
        name = next((n for n in names if line.startswith(n + " ")), None)
        if name is not None:
            *_, batch, hits, errors = line.split()
            rows[name] = (float(batch), int(hits.rstrip("%")), int(errors))
    assert set(rows) == set(names), proc.stdout
    assert rows["int8, batch 32, wait 2 ms, cache off"][0] > 1.0, (
        "batching on must not read meta.json's batch of 1"
    )
    assert rows["int8, no batching, cache off"][0] == 1.0
    assert rows["int8, batch 32, wait 2 ms, cache on"][1] > 20 and rows["int8, no batching, cache on"][1] > 20
    assert rows["int8, batch 32, wait 2 ms, cache off"][1] == 0 == rows["int8, no batching, cache off"][1]
    assert all(errors == 0 for *_, errors in rows.values())
    assert list(temp.iterdir()) == [], "a run that went well leaves no worker logs"


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
    models = models_copy(settings, tmp_path)
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
    # What --concurrency auto would run here, measured after tune's workers stopped.
    auto = result["auto"]["plans"]["digits:int8"]
    assert auto["processes"] >= 1 and auto["threads"] == 1 and "digits:int8 is light" in auto["reason"]


def test_tune_says_so_when_nothing_fits_the_budget(settings: Settings) -> None:
    proc = inferq(settings, "tune", "--model", "digits", "--p99-ms", "0.001", "--variants", "int8", "--batch-sizes", "8",
                  "--concurrency", "2", "--duration", "1")  # fmt: skip
    assert proc.returncode == 1
    assert "no configuration kept p99 within 0.001 ms" in proc.stdout
    assert "--concurrency auto on this machine" in proc.stdout and "  digits:int8: " in proc.stdout
    assert "    why: digits:int8 is light" in proc.stdout


def test_ctrl_c_stops_tune_and_what_it_started_and_reports_what_was_measured_as_partial(
    settings: Settings, own_redis: LocalRedis, tmp_path: Path
) -> None:
    models = models_copy(settings, tmp_path)  # also marks this run's processes (their environment)
    # A Redis of its own: the only worker ever announced there is the one tune starts.
    s = settings.with_(models_dir=models, broker_url=own_redis.url, result_backend=own_redis.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "tune", "--model", "digits", "--p99-ms", "1000", "--variants", "int8",
         "--batch-sizes", "1,8", "--concurrency", "2", "--duration", "30", "--json"],
        env={**os.environ, **s.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,  # a terminal's foreground job: Ctrl-C reaches its whole process group
    )  # fmt: skip
    try:
        with Client(s) as client:
            deadline = time.monotonic() + 60
            while not collect(client)["workers"]:
                assert time.monotonic() < deadline and proc.poll() is None, "tune's worker did not come up"
                time.sleep(0.2)
        time.sleep(3)  # a few seconds of load on the first configuration
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 20, "tune must stop at once, not finish the point or go on"
    result = json.loads(out)
    assert result["partial"] is True and result["configurations"] == 2
    [point] = result["points"]  # the first configuration, cut short; the second never started
    assert point["max_batch_size"] == 1 and point["stopped_early"] is True
    assert 1 < point["measured_s"] < 25 and point["errors"] == 0 and point["throughput"] > 0
    assert result["recommended"] is None  # nothing measured in full
    assert this_runs_processes(models) == [], "tune's worker still runs"


def test_a_worker_that_dies_at_start_up_is_reported_at_once_with_its_error(
    settings: Settings, tmp_path: Path
) -> None:
    models = models_copy(settings, tmp_path)
    (models / "digits" / "int8" / "model.tflite").write_bytes(b"not a model")
    s = settings.with_(models_dir=models)
    temp = tmp_path / "temp"
    temp.mkdir()
    for args in (
        ("tune", "--model", "digits", "--p99-ms", "100", "--variants", "int8", "--batch-sizes", "1",
         "--concurrency", "1", "--duration", "1"),
        ("bench", "--model", "digits:int8", "--concurrency", "1", "--duration", "1", "--compare", "batching"),
    ):  # fmt: skip
        t0 = time.monotonic()
        proc = inferq(s, *args, timeout=60, env={"TMPDIR": str(temp)})
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert time.monotonic() - t0 < 30, "it waited for a worker that had exited"
        first, *tail = proc.stderr.strip().splitlines()
        m = re.fullmatch(
            r"inferq: ConfigError: the worker for digits:int8 exited with status \d+ while starting; "
            r"the end of its log (\S+):",
            first,
        )
        assert m, proc.stderr
        assert any("cannot load TFLite model" in line and "model.tflite" in line for line in tail), (
            proc.stderr
        )
        assert Path(m.group(1)).parent == temp and Path(m.group(1)).is_file(), "a failed worker's log is kept"


def this_runs_processes(models: Path) -> list[int]:
    """PIDs of live processes started with this run's models folder in their environment."""
    marker = f"INFERQ_MODELS_DIR={models}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0") and ProcessRecord.read(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
    return found
