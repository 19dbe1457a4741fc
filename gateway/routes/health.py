"""Liveness, readiness, server metadata and Prometheus metrics.

Liveness, readiness and ``/metrics`` need no API key: load balancers, orchestrators and
Prometheus probe them without one, and they tell nothing about jobs or inputs (counts
only, no model names or worker host names).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import Owner
from gateway.dataplane import DataPlane
from gateway.errors import error_response
from gateway.metrics import metrics_endpoint
from gateway.responses import JsonResponse
from gateway.routes import ERRORS
from gateway.schemas import ErrorBody, Liveness, Readiness, ServerMetadata

router = APIRouter(tags=["health"])


def plane(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.plane
    return dp


@router.get("/v2/health/live", response_model=Liveness, summary="The gateway's event loop answers")
async def live() -> Response:
    return JsonResponse({"live": True})


@router.get(
    "/v2/health/ready",
    response_model=Readiness,
    summary="200 when Redis answers and at least one worker serves a model, else 503",
    responses={503: {"model": ErrorBody, "description": "Not ready; the message says what is missing."}},
)
async def ready(request: Request) -> Response:
    r = await plane(request).readiness()
    if r.ready:
        return JsonResponse(r)
    missing = [name for name, ok in (("broker Redis", r.broker), ("result Redis", r.results)) if not ok]
    why = f"{' and '.join(missing)} not answering" if missing else "no live worker serves a model"
    return error_response(503, f"not ready: {why}")


@router.get(
    "/v2",
    response_model=ServerMetadata,
    summary="Server metadata: name, version, extensions",
    responses={401: ERRORS[401]},
)
async def server_metadata(request: Request, owner: Owner) -> Response:
    return JsonResponse(plane(request).server_metadata())


router.add_api_route(
    "/metrics",
    metrics_endpoint,
    methods=["GET"],
    summary="Prometheus metrics: requests and latency per route template and status",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
