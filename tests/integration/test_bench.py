"""A short real ``inferq bench`` against a private Redis and a worker: report and plot."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def bench(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", *args],
        env={**os.environ, **settings.env()}, capture_output=True, text=True, cwd=ROOT, timeout=180,
    )  # fmt: skip


def test_open_loop_bench_reports_percentiles_and_writes_a_plot(
    digits_worker, settings: Settings, tmp_path: Path
) -> None:
    png = tmp_path / "bench.png"
    proc = bench(settings, "--model", "digits:int8", "--rate", "40", "--duration", "3", "--repeat-fraction", "0.25",
                 "--json", "--plot", str(png))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)["runs"][0]
    assert run["mode"] == "open" and run["offered_rate"] == 40
    assert run["errors"] == 0 and run["completed"] == run["sent"] > 60
    assert 25 < run["throughput"] < 60
    assert 0.1 < run["cache_hit_ratio"] < 0.45
    for m in ("end_to_end", "queue", "batch_wait", "compute", "processing"):
        s = run["latency_ms"][m]
        assert s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["p99_9"] <= s["max"], (m, s)
    assert run["latency_ms"]["end_to_end"]["p50"] >= run["latency_ms"]["processing"]["p50"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_closed_loop_sweep_finds_a_knee_and_prints_a_table(
    digits_worker, settings: Settings, tmp_path: Path
) -> None:
    proc = bench(
        settings,
        "--model",
        "digits:fp32",
        "--concurrency",
        "1,4",
        "--duration",
        "2",
        "--plot",
        str(tmp_path / "s.png"),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "closed loop, 1 in flight" in out and "closed loop, 4 in flight" in out
    assert "end_to_end" in out and "p99.9" in out
    assert "concurrency" in out and "throughput" in out
    assert (tmp_path / "s.png").stat().st_size > 10_000
    # closed loop: end to end counts from each submit, not from an open loop's schedule
    assert "end_to_end from each job's submit (closed loop" in out
    assert "intended send time" not in out


def test_a_rate_sweep_plot_draws_every_rate_and_names_the_one_broken_down(
    digits_worker, settings: Settings, tmp_path: Path
) -> None:
    png = tmp_path / "sweep.png"
    proc = bench(
        settings, "--model", "digits:int8", "--rate", "20,40,80", "--duration", "1", "--plot", str(png)
    )
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    drawn = Image.open(png).text["Description"]  # what the plot drew, written into the PNG
    curves, breakdown = drawn.split("; ")[:2]
    assert curves == "end-to-end latency CDF per run: 20 jobs/s, 40 jobs/s, 80 jobs/s", drawn
    assert re.fullmatch(r"breakdown: (20|40|80) jobs/s( \(the knee\))?", breakdown), drawn
    assert f"plot: {png} ({drawn})" in proc.stdout


def test_ctrl_c_stops_the_load_and_still_reports(digits_worker, settings: Settings) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "bench", "--model", "digits:int8", "--concurrency", "2",
         "--duration", "60", "--json"],
        env={**os.environ, **settings.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = json.loads(out)["runs"][0]
    assert run["stopped_early"] is True
    assert run["completed"] > 10 and run["errors"] == 0


def test_a_bench_stopped_early_says_how_long_it_ran(digits_worker, settings: Settings) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "bench", "--model", "digits:int8", "--concurrency", "2", "--duration", "60"],
        env={**os.environ, **settings.env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,  # a terminal's foreground job: Ctrl-C reaches its whole group
    )  # fmt: skip
    time.sleep(5)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    head = re.search(
        r"^digits:int8  closed loop, 2 in flight, (\S+) s of the 60 s asked \(stopped early\)$", out, re.M
    )
    assert head, out
    assert 1 < float(head.group(1)) < 30, out
    assert "60 s\n" not in out and "end_to_end from each job's submit (closed loop" in out


def test_sweep_doubles_the_load_until_saturation(digits_worker, settings: Settings) -> None:
    proc = bench(
        settings, "--model", "digits:int8", "--concurrency", "1", "--sweep", "--duration", "1.5", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    conc = [r["concurrency"] for r in runs]
    assert conc[:2] == [1, 2] and all(b == 2 * a for a, b in itertools.pairwise(conc))
    assert 2 <= len(runs) <= 10
