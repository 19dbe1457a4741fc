"""Every failure answered in the protocol's ``{"error": "message"}`` shape.

Handlers for inferq's errors, FastAPI's validation error (never its default 422 body),
Starlette's HTTP errors (404, 405) and, last, anything unexpected: logged with its
traceback here, answered ``{"error": "internal error"}`` with no trace to the caller.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from gateway.responses import JsonResponse
from tasks.errors import (
    BadInput,
    BrokerUnavailable,
    ConfigError,
    Expired,
    IncompatibleVersion,
    InferqError,
    JobCancelled,
    JobNotFound,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    Timeout,
    TransientError,
)

log = logging.getLogger(__name__)

#: Seconds a client is told to wait before retrying a 503 (Redis or the workers away).
RETRY_AFTER_S = 1

#: inferq's errors and their HTTP statuses; the first class an error is an instance of wins.
STATUS: tuple[tuple[type[InferqError], int], ...] = (
    (PayloadTooLarge, 413),
    (BadInput, 400),
    (ModelNotFound, 404),
    (JobNotFound, 404),
    (NotReady, 409),
    (JobCancelled, 409),
    (IncompatibleVersion, 409),
    (Timeout, 504),
    (Expired, 504),
    (TransientError, 503),  # BrokerUnavailable, a runtime's failure of the moment
    (ConfigError, 500),
)


class Unauthorized(Exception):
    """No API key, or not one of the configured keys."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def status_of(exc: InferqError) -> int:
    """The HTTP status an inferq error is answered with (503 for the retryable rest)."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 503 if exc.retryable else 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JsonResponse:
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    if status == 413:
        # The rest of an oversized body is never read: the connection cannot be reused.
        headers["Connection"] = "close"
    return JsonResponse({"error": message}, status_code=status, headers=headers)


def inferq_error_response(exc: InferqError) -> JsonResponse:
    status = status_of(exc)
    if status == 500:
        log.error("gateway: %s: %s", type(exc).__name__, exc)
        return error_response(500, "internal error")
    if isinstance(exc, BrokerUnavailable):
        # Its message names the Redis tried (host, port, database, ACL user): for the
        # operator's log, not for HTTP callers.
        log.warning("gateway: %s", exc)
        return error_response(503, "Redis (inferq's broker or result backend) is unavailable; retry later")
    return error_response(status, str(exc))


async def _on_inferq_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, InferqError)
    return inferq_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        problems.append(f"{loc}: {err.get('msg', 'invalid')}")
    return error_response(400, "bad request: " + "; ".join(problems))


async def _on_http_error(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "error"
    return error_response(
        exc.status_code, message.lower() if message == "Not Found" else message, dict(exc.headers or {})
    )


async def _on_unauthorized(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, Unauthorized)
    return error_response(401, exc.message, {"WWW-Authenticate": "Bearer"})


async def _on_anything(request: Request, exc: Exception) -> JsonResponse:
    log.error("gateway: unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InferqError, _on_inferq_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Unauthorized, _on_unauthorized)
    app.add_exception_handler(Exception, _on_anything)
