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
from tasks.constants import DEFAULT_MAX_MESSAGE_BYTES, INPUT_KEY_PREFIX
from tasks.errors import BadInput, InferqError, PayloadTooLarge
from tasks.wire import BulkTensor


@dataclass(frozen=True)
class Unusable:
    """Stands in for a stored input that cannot be used: the job is answered ``error``."""

    error: InferqError


class StoredInputs:
    """Reads stored inputs of at most ``max_bytes`` each (a bulk message's stacked inputs:
    at most ``max_tensor_bytes``), in one round trip."""

    def __init__(
        self, client: redis.Redis[bytes], max_bytes: int, max_tensor_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.max_bytes = max_bytes
        self.max_tensor_bytes = max_tensor_bytes
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

    def tensors_ref(self, bulk: BulkTensor) -> str | None:
        """A bulk message's tensors key, if usable; a bad one becomes the message's ``error``."""
        ref = bulk.tensors_ref
        if ref is None or (ref.startswith(INPUT_KEY_PREFIX) and len(ref) <= 200):
            return ref
        bulk.error = BadInput("the bulk message's 'tensors_ref' is not an inferq input key")
        return None

    def fill(self, requests: list[dict[str, Any]], bulks: list[BulkTensor] | None = None) -> None:
        """Set each request's ``inputs`` from its ``inputs_ref`` (or to an ``Unusable``), and
        each bulk message's ``tensors`` from its ``tensors_ref`` (or its ``error``)."""
        bulks = bulks or []
        keys = [r["inputs_ref"] for r in requests] + [b.tensors_ref for b in bulks]
        limits = [self.max_bytes] * len(requests) + [self.max_tensor_bytes] * len(bulks)
        got: list[bytes | int | None] = self._read(keys=keys, args=limits)
        for request, blob in zip(requests, got, strict=False):
            value = _read(blob, "the job's input", self.max_bytes)
            request["inputs"] = Unusable(value) if isinstance(value, InferqError) else value
        for bulk, blob in zip(bulks, got[len(requests) :], strict=True):
            value = _read(blob, "the bulk message's inputs", self.max_tensor_bytes)
            if isinstance(value, InferqError):
                bulk.error = value
            else:
                bulk.tensors = value  # decoded by the pipeline


def _read(blob: bytes | int | None, what: str, limit: int) -> bytes | InferqError:
    if blob is None:
        return BadInput(f"{what} was not found beside its message (expired, or a bad reference)")
    if isinstance(blob, int):
        return PayloadTooLarge(f"input payload is {blob} bytes, over the limit of {limit} bytes")
    return blob
