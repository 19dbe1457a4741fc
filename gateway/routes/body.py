"""Reading an inference request's body: JSON, or JSON header + binary tensors.

The routes read the raw body themselves (FastAPI's body parsing knows JSON only), so
the binary tensor data extension and the JSON form share one decoder
(``gateway/protocol.py``). The OpenAPI document still describes the JSON form from
``InferRequest`` (``REQUEST_BODY``, resolved by ``gateway/openapi.py``).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import Request

from gateway.protocol import HEADER_LENGTH, DecodedRequest, decode_request, parse_header_length
from tasks.codec import quote
from tasks.errors import BadInput

#: Bodies up to this size are decoded on the event loop (about a millisecond at most).
DECODE_INLINE_BYTES = 256 * 1024

BINARY_EXTENSION = """
**Binary tensor data extension** (as Triton's): send the JSON header, then the raw tensor
bytes (little-endian, row-major; BOOL one byte each), with the request header
`Inference-Header-Content-Length: <bytes of the JSON header>`; each binary input has
`parameters.binary_data_size` instead of `data`, its bytes following in input order.
Ask for binary outputs with `parameters.binary_data_output: true` (all) or an output's
`parameters.binary_data: true`: the answer is then `application/octet-stream`, the JSON
header (each binary output with `parameters.binary_data_size`) followed by the bytes, and
its `Inference-Header-Content-Length` header gives the JSON header's length.
"""

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header + binary tensor data (Inference-Header-Content-Length).",
            },
        },
    }
}


async def read_infer_request(request: Request) -> DecodedRequest:
    """The request's tensors, decoded; ``BadInput`` (400) or ``PayloadTooLarge`` (413) else."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise BadInput(f"Content-Encoding {quote(encoding)} is not supported: send the body uncompressed")
    body = await request.body()
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH), len(body))
    if len(body) <= DECODE_INLINE_BYTES:
        return decode_request(body, header_length)
    # Parsing megabytes of JSON takes tens of milliseconds: not on the event loop, which
    # must keep answering every other request (and liveness) meanwhile.
    return await anyio.to_thread.run_sync(decode_request, body, header_length)
