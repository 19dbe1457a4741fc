"""Read inputs that travelled beside their messages, refusing any over the payload limit.

The producer stores an input over ``INLINE_INPUT_MAX_BYTES`` under its own key and
sends only the reference. A plain ``MGET`` would pull whatever that key holds into the
worker, however big; this script checks each value's length in Redis first, so an
oversized one costs the worker an integer, not its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from tasks import lua
from tasks.constants import INPUT_KEY_PREFIX
from tasks.errors import BadInput, InferqError, PayloadTooLarge


@dataclass(frozen=True)
class Unusable:
    """Stands in for a stored input that cannot be used: the job is answered ``error``."""

    error: InferqError


class StoredInputs:
    """Reads stored inputs of at most ``max_bytes`` each, in one round trip."""

    def __init__(self, client: redis.Redis[bytes], max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._read = client.register_script(lua.source("read_inputs"))

    def ref(self, request: Any) -> str | None:
        """The request's input key, if it has a usable one; a bad one is marked ``Unusable``."""
        ref = request.get("inputs_ref") if isinstance(request, dict) else None
        if ref is None:
            return None
        # Only our own prefix: a message must not make us read arbitrary keys.
        if isinstance(ref, str) and ref.startswith(INPUT_KEY_PREFIX) and len(ref) <= 200:
            return ref
        request["inputs"] = Unusable(BadInput("the job's 'inputs_ref' is not an inferq input key"))
        return None

    def fill(self, requests: list[dict[str, Any]]) -> None:
        """Set each request's ``inputs`` from its ``inputs_ref`` (or to an ``Unusable``)."""
        got: list[bytes | int | None] = self._read(
            keys=[r["inputs_ref"] for r in requests], args=[self.max_bytes]
        )
        for request, blob in zip(requests, got, strict=True):
            if blob is None:
                request["inputs"] = Unusable(
                    BadInput("the job's input was not found beside its message (expired, or a bad reference)")
                )
            elif isinstance(blob, int):
                request["inputs"] = Unusable(
                    PayloadTooLarge(
                        f"input payload is {blob} bytes, over the limit of {self.max_bytes} bytes"
                    )
                )
            else:
                request["inputs"] = blob
