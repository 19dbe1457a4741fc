"""An ``inferq gateway`` child process on a free port, as a deployment would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ops.local.processes import die_with_parent, stop_process
from ops.local.redis_server import free_port
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """``python -m ops.cli gateway --port <free>`` with the settings' ``INFERQ_*`` variables."""

    def __init__(self, settings: Settings, log: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "gateway", "--port", str(self.port), *extra],
            env={**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"},
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_live(self, timeout: float = 60) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not live within {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> int:
        code = stop_process(self.proc, grace_s=20)
        self._fh.close()
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def started_gateway(settings: Settings, log: Path, *extra: str, port: int | None = None) -> GatewayProcess:
    return GatewayProcess(settings, log, *extra, port=port).wait_live()
