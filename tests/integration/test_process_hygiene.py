"""Child processes die with whoever started them: an interrupted run leaves nothing serving."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def gone(pid: int) -> bool:
    """Exited (a zombie waiting to be reaped counts: it serves nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_a_private_redis_dies_when_the_process_that_started_it_is_killed() -> None:
    code = (
        "import time\n"
        "from ops.local.redis_server import LocalRedis\n"
        "r = LocalRedis().start()\n"
        "print(r.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert parent.stdout is not None
    redis_pid = int(parent.stdout.readline())
    assert not gone(redis_pid)
    parent.kill()  # SIGKILL: no cleanup code of the parent runs
    parent.wait()
    deadline = time.monotonic() + 10
    while not gone(redis_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(redis_pid), "the private redis-server outlived the process that started it"
