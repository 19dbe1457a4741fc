"""Prometheus metrics of the gateway: requests and their latency per route and status.

Labelled by the route *template* (``/v2/models/{model}/infer``), never the raw path, so
a scan of random URLs cannot grow the label set (unmatched paths share one label).
Each app has a registry of its own (tests build many apps in one process). With
several uvicorn worker processes, ``PROMETHEUS_MULTIPROC_DIR`` (set by
``gateway/server.py``) makes every process write its counts to files there, and
``/metrics`` answers the sum over all of them.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds; from a cached answer (about a millisecond) to a long synchronous infer.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UNMATCHED = "<unmatched>"


class GatewayMetrics:
    """The gateway's metrics in one registry, and how to expose them."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("method", "route", "status")
        self.requests = Counter(
            "inferq_gateway_requests", "HTTP requests answered", labels, registry=self.registry
        )
        self.latency = Histogram(
            "inferq_gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def exposition(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by the route that answered it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before any answer is the catch-all's 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)


async def metrics_endpoint(request: Request) -> Response:
    metrics: GatewayMetrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
