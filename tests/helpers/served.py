"""A child process serving HTTP on a free port, as a deployment would run it.

The gateway (``tests/helpers/gateway.py``) and the example backends
(``tests/integration/test_examples.py``) are all started, waited for and stopped the
same way: output to a log file, SIGTERM when the test run dies, ready once a path
answers 200.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import httpx

from ops.local.processes import die_with_parent, stop_process

ROOT = Path(__file__).resolve().parents[2]


class ServedProcess:
    """``cmd`` run from the repository root with ``env``; it should listen on ``port``."""

    #: What the process is, for messages.
    name = "server"
    #: A path that answers 200 once the server is up.
    live_path = "/"

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            list(cmd),
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_live(self, timeout: float = 60) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}{self.live_path}", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not live within {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> int:
        code = stop_process(self.proc, grace_s=20)
        self._fh.close()
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
