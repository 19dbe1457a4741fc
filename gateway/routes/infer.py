"""``POST /v2/models/{model}[/versions/{version}]/infer``: N inputs in, N results out, synchronously."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import Owner
from gateway.protocol import BINARY_MEDIA_TYPE
from gateway.routes import ERRORS
from gateway.routes.body import BINARY_EXTENSION, REQUEST_BODY, read_infer_request
from gateway.routes.health import plane
from gateway.schemas import ErrorBody, InferResponse

router = APIRouter(tags=["inference"])

DESCRIPTION = (
    """
Runs the request's inputs and answers their outputs. Every tensor has a leading batch
dimension N: N inputs are submitted as N inferq jobs (each cached on its own) and their
outputs come back stacked along the same dimension. The request waits for all N results
up to the gateway's infer timeout (INFERQ_GATEWAY_INFER_TIMEOUT_S), then answers 504.
"""
    + BINARY_EXTENSION
)

_INFER = {
    "response_model": InferResponse,
    "description": DESCRIPTION,
    "openapi_extra": REQUEST_BODY,
    "responses": {
        **ERRORS,
        200: {"content": {BINARY_MEDIA_TYPE: {}}, "description": "JSON, or JSON header + binary outputs."},
        413: {"model": ErrorBody, "description": "Request body over INFERQ_GATEWAY_MAX_BODY_BYTES."},
        504: {"model": ErrorBody, "description": "No result within the infer timeout, or past its deadline."},
    },
}


async def _infer(request: Request, model: str, version: str | None) -> Response:
    decoded = await read_infer_request(request)
    encoded = await plane(request).infer(model, version, decoded)
    headers = (
        {}
        if encoded.header_length is None
        else {"Inference-Header-Content-Length": str(encoded.header_length)}
    )
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)


@router.post("/v2/models/{model}/infer", summary="Inference on the model's default version", **_INFER)  # type: ignore[arg-type]
async def infer(request: Request, model: str, owner: Owner) -> Response:
    return await _infer(request, model, None)


@router.post("/v2/models/{model}/versions/{version}/infer", summary="Inference", **_INFER)  # type: ignore[arg-type]
async def infer_version(request: Request, model: str, version: str, owner: Owner) -> Response:
    return await _infer(request, model, version)
