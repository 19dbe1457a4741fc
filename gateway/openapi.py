"""The OpenAPI document: FastAPI's, plus the request body schema the routes read by hand.

The infer and jobs routes read their body raw (for the binary extension), so FastAPI
does not see ``InferRequest``; its schema (and the models it uses) is added to the
components here, where the routes' ``requestBody`` refers to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.schemas import InferRequest

REF = "#/components/schemas/{model}"
_BAD_REQUEST = {
    "description": "Bad request: names what was expected and what came.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _no_422(schema, components)
        request = InferRequest.model_json_schema(ref_template=REF)
        for name, definition in request.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["InferRequest"] = request
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _no_422(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """The gateway never answers FastAPI's 422 (a malformed parameter is a 400 ``{"error"}``):
    its validation-error shapes leave the document, a 400 takes their place."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", _BAD_REQUEST)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
