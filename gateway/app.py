"""The gateway's FastAPI app: ``create_app(settings)``, one ``AsyncClient`` per process.

The client is made in the app's lifespan (after uvicorn forks its workers, on the
event loop that will use it) and closed when the server stops. Middleware, outermost
first: metrics (so every answer is counted, 413s included), the body limit, then
FastAPI's routing with the error handlers of ``gateway/errors.py``.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.auth import KeyCheck
from gateway.dataplane import DataPlane
from gateway.errors import install_error_handlers
from gateway.limits import BodyLimit
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.openapi import install_openapi
from gateway.routes import health, infer, jobs, models
from producers import AsyncClient
from tasks.settings import Settings

DESCRIPTION = """
inferq's HTTP gateway: the Open Inference Protocol (KServe v2, as Triton's HTTP API) over
inferq's queue, plus asynchronous jobs. An inferq *variant* (fp32, int8, savedmodel …) is
the protocol's *version*. Every error is `{"error": "message"}`. With API keys configured
(INFERQ_API_KEYS), every route but health, readiness, `/metrics` and these docs needs
`Authorization: Bearer <key>`.
"""


def create_app(settings: Settings, *, metrics_dir: str | None = None) -> FastAPI:
    """The app serving ``settings``' Redis; ``metrics_dir``: Prometheus's multiprocess folder."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = AsyncClient(settings)
        app.state.plane = DataPlane(client, settings)
        # Everything imported and built so far lives as long as the process: out of the
        # collector's sight, a full collection scans only what requests allocate (it was
        # the longest pause of the event loop, several ms with FastAPI's import graph).
        gc.freeze()
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(title="inferq gateway", version="2", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = KeyCheck(settings.api_key_list)
    app.state.metrics = GatewayMetrics(metrics_dir)
    install_error_handlers(app)
    for router in (health.router, models.router, infer.router, jobs.router):
        app.include_router(router)
    install_openapi(app)
    # add_middleware puts each new one outside the last: the body limit, then metrics.
    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
