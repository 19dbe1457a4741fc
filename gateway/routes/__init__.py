"""The HTTP routes, one module per group; each handler parses, calls the data plane, answers."""

from __future__ import annotations

from typing import Any

from gateway.schemas import ErrorBody

#: The error answers routes document (all in the protocol's ``{"error": ...}`` shape).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input: names what was expected and what came."},
    401: {"model": ErrorBody, "description": "API keys are configured and none, or a wrong one, was given."},
    404: {"model": ErrorBody, "description": "No such model, version or job (or not this key's job)."},
    503: {"model": ErrorBody, "description": "Redis or the workers are unavailable; see Retry-After."},
}
