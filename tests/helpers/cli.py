"""Running the real ``inferq`` command in a child process, as a user's shell would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def inferq(
    settings: Settings | None,
    *args: str,
    timeout: float = 60,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m ops.cli ARGS`` with ``settings`` as its ``INFERQ_*`` environment."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**os.environ, **(settings.env() if settings is not None else {}), **(env or {})},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], kind: str) -> str:
    """The command's error: exit 2 and exactly one stderr line ``inferq: <kind>: ...``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"inferq: {kind}: "), lines[0]
    return lines[0]


@contextmanager
def port_in_use() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that something listens on, for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])
