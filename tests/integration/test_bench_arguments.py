"""``inferq bench`` and ``inferq tune`` refuse what they cannot use at once, in one line.

Each case runs the real command against the private Redis with no worker: a value
checked too late would start a load (or a worker) and run into the subprocess timeout,
one checked nowhere would end in a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

#: Long enough to start a load or a worker, short against the loads asked for below.
FAST_S = 20


def inferq(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**os.environ, **settings.env(), **(env or {})},
        capture_output=True, text=True, cwd=ROOT, timeout=FAST_S,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], kind: str, says: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"inferq: {kind}: "), proc.stderr
    assert says in lines[0], lines[0]


LOAD = ("bench", "--model", "digits:int8")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((*LOAD, "--rate", "10", "--duration", "0"), "--duration must be more than 0 seconds, got 0"),
        ((*LOAD, "--concurrency", "2", "--duration", "0"), "--duration must be more than 0 seconds, got 0"),
        (
            (*LOAD, "--concurrency", "2", "--duration", "60", "--repeat-fraction", "1.5"),
            "from 0 to 1, got 1.5",
        ),
        ((*LOAD, "--concurrency", "2", "--duration", "60", "--repeat-fraction", "-1"), "from 0 to 1, got -1"),
        (
            (*LOAD, "--concurrency", "2", "--duration", "60", "--variants", "fp32"),
            "--variants fp32 is only used by --compare variant",
        ),
        (
            ("tune", "--model", "digits", "--p99-ms", "-5", "--duration", "60"),
            "--p99-ms must be more than 0 ms",
        ),
        (
            ("tune", "--model", "digits:int8", "--p99-ms", "50", "--duration", "60"),
            "to tune one variant: --model digits --variants int8",
        ),
    ],
    ids=[
        "bench-rate-duration-0",
        "bench-concurrency-duration-0",
        "repeat-fraction-1.5",
        "repeat-fraction-negative",
        "variants-without-compare-variant",
        "tune-negative-p99",
        "tune-model-with-variant",
    ],
)
def test_bad_bench_and_tune_values_are_refused_before_any_load(
    settings: Settings, args: tuple[str, ...], says: str
) -> None:
    assert_one_line_error(inferq(settings, *args), "BadInput", says)


def test_inputs_that_are_not_an_npy_file_are_named_as_such(settings: Settings, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("some notes, not inputs\n")
    proc = inferq(settings, *LOAD, "--concurrency", "2", "--duration", "60", "--inputs", str(note))
    assert_one_line_error(
        proc,
        "BadInput",
        f"--inputs {note}: expected an .npy array of inputs (as numpy.save writes), got a file",
    )


def test_plot_without_matplotlib_is_refused_before_the_run(settings: Settings, tmp_path: Path) -> None:
    # A matplotlib that cannot be imported, found before the real one: as if not installed.
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'matplotlib\'", name="matplotlib")\n'
    )
    proc = inferq(
        settings,
        *LOAD, "--concurrency", "2", "--duration", "60", "--plot", str(tmp_path / "out.png"),
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    assert_one_line_error(proc, "ConfigError", "--plot needs matplotlib, which is not installed")
    assert "pip install 'inferq[bench]'" in proc.stderr
    assert not (tmp_path / "out.png").exists()


def test_bench_refuses_a_variant_no_live_worker_serves_unless_told(
    settings: Settings, tmp_path: Path
) -> None:
    """No worker on this Redis: the load would only measure jobs waiting in a queue. The
    refusal comes at once, naming the variant and the flag that overrides it."""
    proc = inferq(settings, *LOAD, "--concurrency", "1", "--duration", "60")
    assert_one_line_error(proc, "ConfigError", "no live worker serves digits:int8")
    assert "--no-worker-check" in proc.stderr
