"""An ``inferq gateway`` child process on a free port, as a deployment would run it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ops.local.redis_server import free_port
from tasks.settings import Settings
from tests.helpers.served import ServedProcess


class GatewayProcess(ServedProcess):
    """``python -m ops.cli gateway --port <free>`` with the settings' ``INFERQ_*`` variables."""

    name = "gateway"
    live_path = "/v2/health/live"

    def __init__(self, settings: Settings, log: Path, *extra: str, port: int | None = None) -> None:
        port = port or free_port()
        cmd = [sys.executable, "-m", "ops.cli", "gateway", "--port", str(port), *extra]
        super().__init__(cmd, {**os.environ, **settings.env()}, log, port)


def started_gateway(settings: Settings, log: Path, *extra: str, port: int | None = None) -> GatewayProcess:
    return GatewayProcess(settings, log, *extra, port=port).wait_live()
