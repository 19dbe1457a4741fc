"""Model metadata, readiness and load statistics; an inferq variant is the protocol's version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import Owner
from gateway.errors import error_response
from gateway.responses import JsonResponse
from gateway.routes import ERRORS
from gateway.routes.health import plane
from gateway.schemas import ErrorBody, ModelMetadata, ModelReady, StatsResponse

router = APIRouter(tags=["models"], responses={k: ERRORS[k] for k in (401, 404, 503)})


async def _metadata(request: Request, model: str, version: str | None) -> Response:
    return JsonResponse(await plane(request).model_metadata(model, version))


@router.get("/v2/models/{model}", response_model=ModelMetadata, summary="Model metadata (default version)")
async def model_metadata(request: Request, model: str, owner: Owner) -> Response:
    return await _metadata(request, model, None)


@router.get("/v2/models/{model}/versions/{version}", response_model=ModelMetadata, summary="Model metadata")
async def version_metadata(request: Request, model: str, version: str, owner: Owner) -> Response:
    return await _metadata(request, model, version)


async def _ready(request: Request, model: str, version: str | None) -> Response:
    r = await plane(request).model_ready(model, version)
    if r.ready:
        return JsonResponse(r)
    return error_response(503, f"model {r.name} version {r.version} is not served by any live worker")


_READY = {
    "response_model": ModelReady,
    "summary": "200 when a live worker serves the model version, else 503",
    "responses": {503: {"model": ErrorBody, "description": "Not served by any live worker now."}},
}


@router.get("/v2/models/{model}/ready", **_READY)  # type: ignore[arg-type]
async def model_ready(request: Request, model: str, owner: Owner) -> Response:
    return await _ready(request, model, None)


@router.get("/v2/models/{model}/versions/{version}/ready", **_READY)  # type: ignore[arg-type]
async def version_ready(request: Request, model: str, version: str, owner: Owner) -> Response:
    return await _ready(request, model, version)


async def _stats(request: Request, model: str, version: str | None) -> Response:
    stats = await plane(request).model_stats(model, version)
    return JsonResponse(StatsResponse(model_stats=stats))


@router.get(
    "/v2/models/{model}/stats",
    response_model=StatsResponse,
    summary="Queue depth, throughput and p50/p95/p99 queue and compute time of every version",
)
async def model_stats(request: Request, model: str, owner: Owner) -> Response:
    return await _stats(request, model, None)


@router.get(
    "/v2/models/{model}/versions/{version}/stats",
    response_model=StatsResponse,
    summary="Queue depth, throughput and p50/p95/p99 queue and compute time of one version",
)
async def version_stats(request: Request, model: str, version: str, owner: Owner) -> Response:
    return await _stats(request, model, version)
