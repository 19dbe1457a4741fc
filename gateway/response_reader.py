"""Reading a gateway answer as a client does (JSON, or JSON header + binary outputs).

The gateway never calls this: it is the other side of ``gateway/protocol.py``, for tests
and for Python callers that want numpy arrays without installing ``tritonclient``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from gateway.protocol import DATATYPES


def decode_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A response as a client reads it: the JSON header and each output as an array."""
    header = body if header_length is None else body[:header_length]
    doc: dict[str, Any] = orjson.loads(header)
    offset = 0 if header_length is None else header_length
    arrays: dict[str, np.ndarray] = {}
    for out in doc.get("outputs", []):
        dtype = DATATYPES[out["datatype"]]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
        else:
            raw = body[offset : offset + size]
            offset += size
            arr = np.frombuffer(raw, dtype=np.uint8 if dtype.kind == "b" else dtype.newbyteorder("<"))
            arrays[out["name"]] = (arr != 0 if dtype.kind == "b" else arr.astype(dtype)).reshape(out["shape"])
    return doc, arrays
