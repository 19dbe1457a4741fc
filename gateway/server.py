"""Running the gateway under uvicorn: one process, or ``workers`` processes on one port.

With one process the app is built here from the settings handed in. With several,
uvicorn starts each worker from an import string, so each builds its app from the
``INFERQ_*`` variables (``app_from_env``, each worker's entry point), which are set from
the settings first; their Prometheus counts go to a shared folder that ``/metrics`` sums.
Ctrl-C (SIGINT) or SIGTERM stops it: requests in flight get ``SHUTDOWN_GRACE_S`` to end,
then the client is closed.
"""

from __future__ import annotations

import os
import tempfile

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from tasks.settings import Settings

#: Seconds requests in flight get to finish once the server is asked to stop.
SHUTDOWN_GRACE_S = 10
_METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


def app_from_env() -> FastAPI:
    """The app of one of several worker processes (uvicorn calls this in each)."""
    return create_app(Settings.from_env(), metrics_dir=os.environ.get(_METRICS_DIR_VAR))


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    access_log: bool = False,
) -> None:
    """Serve until interrupted; ``host``/``port`` default to the settings' (127.0.0.1:8000)."""
    options = {
        "host": host or settings.gateway_host,
        "port": settings.gateway_port if port is None else port,
        "log_level": settings.log_level.lower(),
        "access_log": access_log,
        "server_header": False,
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
        "lifespan": "on",
    }
    if workers <= 1:
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="inferq-gateway-metrics-") as metrics_dir:
        # The workers are new processes: settings and the metrics folder reach them by environment.
        os.environ.update(settings.env())
        os.environ[_METRICS_DIR_VAR] = metrics_dir
        uvicorn.run("gateway.server:app_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
