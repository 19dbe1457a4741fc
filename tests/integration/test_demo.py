"""``inferq demo``, run for real: what it leaves running with ``--keep`` (and nothing without).

Each demo run gets its own models folder (its logs and ``--keep``'s record land beside it),
a dead configured broker (so it starts a private Redis) or a Redis this test started, and
free ports. Whatever a run leaves is killed at the end even when a test fails: its Python
children carry the run's ``INFERQ_MODELS_DIR`` in their environment, and its private Redis
is known by the PID and port it printed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.demo.keep import KEPT_FILE, Kept
from ops.local.processes import ProcessRecord
from ops.local.redis_server import LocalRedis, free_port, redis_answers
from producers.client import Client
from tasks.settings import Settings
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc"),
]

FLOWER_PASSWORD = "demo-test-pw"
#: An environment variable each demo run's processes inherit, naming the run.
RUN_MARKER = "DEMO_TEST_RUN"
LAUNCHER = Path(sys.executable).parent / "inferq"
INFERQ = [str(LAUNCHER)] if LAUNCHER.is_file() else [sys.executable, "-m", "ops.cli"]


class DemoRun:
    """One ``inferq demo`` process in its own process group (a terminal's foreground job).

    ``default_models_dir``: run it as a new user would, from the folder holding
    ``models/``, with ``INFERQ_MODELS_DIR`` unset (the default, relative ``models``).
    """

    def __init__(
        self, tmp_path: Path, models_dir: Path, broker_url: str, *, default_models_dir: bool = False
    ) -> None:
        self.models = tmp_path / "models"
        self.models.mkdir()
        for part in ("fp32", "int8", "data"):  # all the demo reads
            shutil.copytree(models_dir / "digits" / part, self.models / "digits" / part)
        self.kept_file = tmp_path / ".run" / KEPT_FILE
        self.cwd = tmp_path if default_models_dir else ROOT
        self.flower_port = free_port()
        self.gateway_port = free_port()
        # Every process of this run inherits it: how leftovers are found.
        self.marker = f"{RUN_MARKER}={tmp_path}"
        # None of the caller's INFERQ_* settings leak in: the run sees only these.
        models = {} if default_models_dir else {"INFERQ_MODELS_DIR": str(self.models)}
        self.env = (
            {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
            | models
            | {
                RUN_MARKER: str(tmp_path),
                "INFERQ_BROKER_URL": broker_url,
                "INFERQ_RESULT_BACKEND": broker_url,
                "INFERQ_FLOWER_PORT": str(self.flower_port),
                "INFERQ_GATEWAY_PORT": str(self.gateway_port),
                "INFERQ_FLOWER_PASSWORD": FLOWER_PASSWORD,
                "INFERQ_METRICS_PORT": "0",  # no fixed port shared with other runs
            }
        )
        self.out_path = tmp_path / "demo.out"
        self.pgid: int | None = None

    def run(self, *args: str, timeout: float = 400) -> int:
        with self.out_path.open("wb") as out:
            proc = subprocess.Popen(
                [*INFERQ, "demo", *args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.pgid = proc.pid
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def line_after(self, heading: str) -> str:
        """The line printed just after the line that starts with ``heading``."""
        lines = self.output.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
        assert starts and starts[-1] + 1 < len(lines), f"no {heading!r} in the output:\n{self.output}"
        return lines[starts[-1] + 1].strip()

    def printed_pids(self) -> dict[str, int]:
        """The PIDs the demo printed as it started Redis (when it did), the worker and Flower."""
        found = {}
        for name, pattern in {
            "redis": r"started a private Redis at \S+ \(pid (\d+)\)",
            "worker": r"starting a worker \(.*?pid (\d+)\)",
            "flower": r"and Flower \(pid (\d+)\)",
            "gateway": r"starting the HTTP gateway on \S+ \(pid (\d+)\)",
        }.items():
            m = re.search(pattern, self.output)
            if m:
                found[name] = int(m.group(1))
        return found

    def private_redis(self) -> tuple[int, int] | None:
        """PID and port of the private Redis the demo said it started."""
        m = re.search(r"started a private Redis at redis://127\.0\.0\.1:(\d+)/0 \(pid (\d+)\)", self.output)
        return (int(m.group(2)), int(m.group(1))) if m else None

    def leftovers(self) -> list[int]:
        """PIDs of this run's processes that still run."""
        marker = self.marker.encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
        # redis-server writes its title over its environment: known by PID and port.
        redis = self.private_redis()
        if redis is not None:
            record = ProcessRecord.read(redis[0])
            if record is not None and f"127.0.0.1:{redis[1]}" in " ".join(record.cmdline):
                pids.append(redis[0])
        return [pid for pid in pids if ProcessRecord.read(pid) is not None]  # zombies serve nothing

    def kill_leftovers(self) -> None:
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def dead_broker_url() -> str:
    """A broker URL where nothing listens: the demo then starts a private Redis."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture()
def demo(tmp_path: Path, models_dir: Path, dead_broker_url: str) -> Iterator[DemoRun]:
    run = DemoRun(tmp_path, models_dir, dead_broker_url)
    yield run
    run.kill_leftovers()


@pytest.fixture()
def demo_from_its_folder(tmp_path: Path, models_dir: Path, dead_broker_url: str) -> Iterator[DemoRun]:
    """A demo run from the folder that holds ``models/``, with the default (relative) models folder."""
    run = DemoRun(tmp_path, models_dir, dead_broker_url, default_models_dir=True)
    yield run
    run.kill_leftovers()


def flower_status(port: int) -> int:
    token = base64.b64encode(f"inferq:{FLOWER_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/workers", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_demo_keep_with_the_default_models_folder_leaves_redis_worker_and_flower_serving_until_its_printed_stop_command(
    demo_from_its_folder: DemoRun, tmp_path: Path
) -> None:
    demo = demo_from_its_folder
    assert demo.run("--keep") == 0, demo.output
    # A terminal closing after the demo signals the demo's process group: nothing kept is in it.
    assert demo.pgid is not None
    for sig in (signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pgid, sig)
    time.sleep(1.0)  # a parent-death or terminal signal takes effect within this

    export = demo.line_after("point other inferq commands")
    m = re.fullmatch(r"export INFERQ_BROKER_URL=(\S+) INFERQ_RESULT_BACKEND=(\S+)", export)
    assert m and m.group(1) == m.group(2), export
    url = m.group(1)
    kept = Kept.load(demo.kept_file)
    assert set(kept.processes) == {"redis", "worker", "flower", "gateway"}
    # the relative default put the kept Redis's folder beside models/, and named it in full
    assert Path(kept.logs["redis"]) == tmp_path / ".run" / "redis" / "redis.log"
    assert Path(kept.logs["redis"]).is_file()
    assert {n: r.pid for n, r in kept.processes.items()} == demo.printed_pids()
    for name, record in kept.processes.items():
        assert record.is_running(), f"the kept {name} exited:\n{demo.output}"
        assert os.getsid(record.pid) == record.pid, f"the kept {name} is not in a session of its own"

    assert redis_answers(url)
    x = np.load(demo.models / "digits" / "data" / "heldout_x.npy")[0]
    with Client(Settings(broker_url=url, models_dir=demo.models)) as client:
        result = client.submit("digits", x, variant="int8", no_cache=True).wait(timeout=60)
    assert not result.cached and result.outputs["probs"].shape == (10,)
    assert flower_status(demo.flower_port) == 200

    stop = subprocess.run(
        ["bash", "-c", demo.line_after("to stop them")],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert stop.stdout.count(") stopped") == 4, stop.stdout
    assert not any(record.is_running() for record in kept.processes.values())
    assert demo.leftovers() == []
    assert not redis_answers(url)
    assert port_closed(demo.flower_port)
    assert port_closed(demo.gateway_port)
    assert not demo.kept_file.exists()


def test_demo_without_keep_leaves_nothing_running(demo: DemoRun) -> None:
    assert demo.run() == 0, demo.output
    pids = demo.printed_pids()
    assert set(pids) == {"redis", "worker", "flower", "gateway"}, demo.output
    # the report shows one HTTP request through the gateway and its answer
    assert f"== one request through the HTTP gateway (http://127.0.0.1:{demo.gateway_port}) ==" in demo.output
    answer = demo.line_after("HTTP 200 in ")
    assert '"model_name": "digits"' in answer and '"name": "probs"' in answer, answer
    assert re.search(r"predicted digit \d \(label \d\)", demo.output), demo.output
    assert demo.leftovers() == []
    assert all(ProcessRecord.read(pid) is None for pid in pids.values())
    redis = demo.private_redis()
    assert redis is not None and not redis_answers(f"redis://127.0.0.1:{redis[1]}/0")
    assert port_closed(demo.flower_port)
    assert not demo.kept_file.exists()


def cache_hits(output: str) -> list[tuple[int, int]]:
    """(hits, jobs) of each pass and variant, in the order printed: pass 1 fp32, int8, pass 2 fp32, int8."""
    return [(int(h), int(n)) for h, n in re.findall(r"cache hits (\d+)/(\d+)", output)]


def test_demo_run_again_on_the_same_configured_redis_computes_pass_1_and_keep_never_stops_that_redis(
    tmp_path: Path, models_dir: Path
) -> None:
    with LocalRedis() as configured:
        run = DemoRun(tmp_path, models_dir, configured.url)
        try:
            assert run.run() == 0, run.output
            # Again on the same Redis, which holds every result of the first run.
            assert run.run("--keep") == 0, run.output
            assert "using the configured Redis" in run.output
            n = 360  # the held-out digits
            assert cache_hits(run.output) == [(0, n), (0, n), (n, n), (n, n)], run.output
            assert run.output.count("mean batch size") == 2, "pass 1 shows each variant's computed jobs"
            seen = re.search(r"Flower saw (\d+) tasks", run.output)
            assert seen and int(seen.group(1)) >= 2 * n, run.output
            assert set(Kept.load(run.kept_file).processes) == {"worker", "flower", "gateway"}
            stop = subprocess.run(
                [*INFERQ, "demo", "--stop"], env=run.env, capture_output=True, text=True, timeout=120
            )
            assert stop.returncode == 0, stop.stdout + stop.stderr
            assert "Redis" not in stop.stdout
            assert run.leftovers() == []
            assert configured.proc is not None and configured.proc.poll() is None
            assert redis_answers(configured.url)
        finally:
            run.kill_leftovers()


def test_demo_whose_worker_cannot_start_says_why_at_once_and_leaves_nothing_running(demo: DemoRun) -> None:
    (demo.models / "digits" / "int8" / "model.tflite").write_bytes(b"not a model")
    t0 = time.monotonic()
    assert demo.run(timeout=90) == 2, demo.output
    assert time.monotonic() - t0 < 60, "it waited out the start-up timeout"
    assert re.search(
        r"inferq: ConfigError: the demo's worker exited with status \d+ while starting; "
        r"the end of its log \S+/\.run/worker\.log:",
        demo.output,
    ), demo.output
    assert "cannot load TFLite model" in demo.output
    assert demo.leftovers() == []


def test_demo_stop_signals_only_processes_that_are_still_the_ones_recorded(tmp_path: Path) -> None:
    def sleeper() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sleep", "300"], start_new_session=True)

    ours, reused = sleeper(), sleeper()
    exited = subprocess.Popen(["true"])
    exited.wait()
    try:
        records = {name: ProcessRecord.read(p.pid) for name, p in (("worker", ours), ("flower", reused))}
        assert records["worker"] is not None and records["flower"] is not None
        # The same PID with another start time: the PID was reused by a process we never started.
        flower = records["flower"]
        records["flower"] = ProcessRecord(flower.pid, flower.start_ticks - 1, flower.cmdline)
        records["redis"] = ProcessRecord(exited.pid, 1, ("true",))
        kept_file = tmp_path / KEPT_FILE
        Kept(
            processes={n: r for n, r in records.items() if r is not None},
            redis_url="redis://127.0.0.1:1/0",
            flower_url="http://127.0.0.1:1",
            logs={},
        ).save(kept_file)

        stop = subprocess.run(
            [*INFERQ, "demo", "--stop", str(kept_file)], capture_output=True, text=True, timeout=60
        )

        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert ours.wait(timeout=10) == -signal.SIGTERM
        assert reused.poll() is None, "a process whose PID was merely reused got signalled"
        assert f"Flower (pid {reused.pid}) is now another process" in stop.stdout
        assert f"Redis (pid {exited.pid}) had already exited" in stop.stdout
        assert not kept_file.exists()
    finally:
        for p in (ours, reused):
            p.kill()
            p.wait()
