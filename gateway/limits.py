"""The request body limit, enforced before the body is read (an ASGI middleware).

A ``Content-Length`` over ``gateway_max_body_bytes`` is answered 413 at once, without
reading a byte of the body, and the connection is closed (its unread rest cannot be
parsed as a next request). A body without a length (chunked) is counted as it is read
and cut off once past the limit: the route reading it gets ``PayloadTooLarge``, which
is answered 413 too. So no request holds more than the limit in the gateway's memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response
from tasks.errors import PayloadTooLarge


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` (by header first, else as they stream in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            response = error_response(
                413, f"request body is {length} bytes, over the limit of {self.max_bytes} bytes"
            )
            await response(scope, receive, send)
            return
        if length is not None:
            await self.app(scope, receive, send)  # the server reads no more than it says
            return
        seen = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None
