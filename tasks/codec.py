"""Payload codec: numpy arrays <-> msgpack (or JSON) without pickle.

An array travels as ``{"dtype": "<f4", "shape": [28, 28, 1], "data": <raw bytes>}``;
in JSON the bytes are base64 (``"b64"``) or the array is a plain nested list. Decoding
is defensive because the bytes come from the network: every size is checked against
the declared shape *before* anything is allocated, and only plain numeric dtypes are
accepted (no object, string or structured dtypes, which could smuggle code or blow up
memory). Error messages describe what came by type, size, dtype and shape, never by
its values: they are stored as the job's result and may be logged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np

from tasks.errors import BadInput, PayloadTooLarge

#: numpy dtype kinds a tensor may have: bool, signed, unsigned, float.
_NUMERIC_KINDS = frozenset("biuf")
_MAX_RANK = 8
#: How much of a sender-chosen name (input name, dtype string) an error message quotes.
_QUOTE_MAX = 40


def contiguous(arr: np.ndarray) -> np.ndarray:
    """C-ordered, native-byte-order copy-if-needed that keeps 0-d arrays 0-d.

    (``np.ascontiguousarray`` alone turns a scalar into shape ``(1,)``, which would
    change what a job sends and which cache key it gets.)
    """
    arr = np.asarray(arr)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr).reshape(arr.shape)


def encode_array(arr: np.ndarray) -> dict[str, Any]:
    """One array as a msgpack-ready map (raw bytes, C order)."""
    arr = contiguous(arr)
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def encode_inputs(inputs: Mapping[str, np.ndarray]) -> bytes:
    """Named inputs as one msgpack blob, the form producers put in a job."""
    blob: bytes = msgpack.packb({name: encode_array(a) for name, a in inputs.items()}, use_bin_type=True)
    return blob


def decode_stacked(payload: Any, rows: int, max_bytes: int) -> dict[str, np.ndarray]:
    """The stacked inputs of a ``BulkTensor`` message (``{name: {dtype, shape, data}}``):
    ``rows`` inputs per name, each at most ``max_bytes`` (the per-input payload limit),
    as arrays of shape ``(rows, ...)`` that share the message's buffer (no copy per input).

    Raises ``PayloadTooLarge`` or ``BadInput`` naming what was expected and what came;
    such an error is every row's (they share the dtype and shape that were wrong).
    """
    obj = payload
    if not isinstance(obj, Mapping) or not obj:
        raise BadInput(
            f"bulk 'tensors' must be a non-empty map of name -> {{dtype, shape, data}}, got {describe(obj)}"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise BadInput(f"input names must be strings, got {type(name).__name__}")
        if not isinstance(value, Mapping):
            raise BadInput(f"input {quote(name)}: expected {{dtype, shape, data}}, got {describe(value)}")
        dtype = parse_dtype(value.get("dtype"), name)
        shape = value.get("shape")
        if not isinstance(shape, (list, tuple)) or not shape or shape[0] != rows:
            raise BadInput(
                f"input {quote(name)}: bulk 'shape' must start with the number of items ({rows}), "
                f"got {_fmt_shape(shape) if isinstance(shape, (list, tuple)) else describe(shape)}"
            )
        row_shape = parse_shape(list(shape[1:]), name)
        data = value.get("data")
        if not isinstance(data, (bytes, bytearray)):
            raise BadInput(f"input {quote(name)}: 'data' must be bytes, got {describe(data)}")
        per_row = _needed_bytes(name, row_shape, dtype, max_bytes)
        if len(data) != per_row * rows:
            raise BadInput(
                f"input {quote(name)}: {rows} inputs of shape {list(row_shape)} of {dtype.name} need "
                f"{per_row * rows} bytes, got {len(data)} bytes"
            )
        out[name] = _native(np.frombuffer(data, dtype=dtype).reshape((rows, *row_shape)))
    return out


def decode_inputs(payload: Any, max_bytes: int) -> dict[str, np.ndarray]:
    """Decode a job's inputs from a msgpack blob or a JSON-style mapping.

    Raises ``PayloadTooLarge`` or ``BadInput`` with what was expected and what came.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)):
        if len(payload) > max_bytes:
            raise PayloadTooLarge(
                f"input payload is {len(payload)} bytes, over the limit of {max_bytes} bytes"
            )
        try:
            obj = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True, max_bin_len=max_bytes)
        except Exception as exc:  # msgpack raises several unrelated types
            raise BadInput(
                f"input payload is not valid msgpack ({type(exc).__name__}: {exc}); "
                "expected a map of name -> {dtype, shape, data}"
            ) from None
    elif isinstance(payload, Mapping):
        obj = payload
    else:
        raise BadInput(
            f"inputs must be msgpack bytes or a mapping of name -> array, got {type(payload).__name__}"
        )
    if not isinstance(obj, Mapping) or not obj:
        raise BadInput(f"inputs must be a non-empty map of name -> array, got {describe(obj)}")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise BadInput(f"input names must be strings, got {type(name).__name__}")
        out[name] = decode_array(value, name=name, max_bytes=max_bytes)
    return out


def decode_array(value: Any, *, name: str = "input", max_bytes: int) -> np.ndarray:
    """One array from ``{dtype, shape, data|b64}`` or from a nested list of numbers."""
    if isinstance(value, Mapping):
        return _decode_tagged(value, name, max_bytes)
    if isinstance(value, list):
        return _decode_list(value, name, max_bytes)
    raise BadInput(
        f"input {quote(name)}: expected {{dtype, shape, data}} or a nested list of numbers, "
        f"got {describe(value)}"
    )


def _decode_tagged(value: Mapping[str, Any], name: str, max_bytes: int) -> np.ndarray:
    dtype = parse_dtype(value.get("dtype"), name)
    shape = parse_shape(value.get("shape"), name)
    if "data" in value:
        data = value["data"]
        if not isinstance(data, (bytes, bytearray)):
            raise BadInput(f"input {quote(name)}: 'data' must be bytes, got {describe(data)}")
    elif "b64" in value:
        encoded = value["b64"]
        if not isinstance(encoded, str) or len(encoded) > max_bytes * 4 // 3 + 4:
            raise BadInput(f"input {quote(name)}: 'b64' must be a base64 string within the size limit")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"input {quote(name)}: 'b64' is not valid base64") from None
    else:
        raise BadInput(f"input {quote(name)}: expected a 'data' (bytes) or 'b64' field, got neither")
    expected = _needed_bytes(name, shape, dtype, max_bytes)
    if len(data) != expected:
        raise BadInput(
            f"input {quote(name)}: shape {list(shape)} of {dtype.name} needs {expected} bytes, "
            f"got {len(data)} bytes"
        )
    return _native(np.frombuffer(bytes(data), dtype=dtype).reshape(shape))


def _needed_bytes(name: str, shape: Sequence[int], dtype: np.dtype[Any], max_bytes: int) -> int:
    """Bytes an array of ``shape`` (one row, for a bulk tensor) needs; ``PayloadTooLarge``
    over ``max_bytes``. Python ints, before numpy allocates anything: a declared shape of
    billions of elements is refused here, not by an out-of-memory kill."""
    n = 1
    for d in shape:
        n *= d
    needed = n * dtype.itemsize
    if needed > max_bytes:
        raise PayloadTooLarge(
            f"input {quote(name)}: shape {list(shape)} of {dtype.name} needs {needed} bytes, "
            f"over the limit of {max_bytes} bytes"
        )
    return needed


def _native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in this machine's byte order (a view when it already is)."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _decode_list(value: list[Any], name: str, max_bytes: int) -> np.ndarray:
    # A nested list is the convenient JSON form; numpy would turn ragged lists or
    # strings into object/str arrays, so check the result's kind rather than trust it.
    try:
        arr = np.array(value)
    except ValueError as exc:
        raise BadInput(f"input {quote(name)}: nested list is ragged ({exc})") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise BadInput(
            f"input {quote(name)}: expected numbers in a rectangular nested list, "
            f"got elements of dtype {arr.dtype} (strings or ragged rows?)"
        )
    if arr.nbytes > max_bytes:
        raise PayloadTooLarge(f"input {quote(name)}: {arr.nbytes} bytes, over the limit of {max_bytes}")
    # JSON numbers are float64/int64; the logical dtype of most models is float32.
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    elif arr.dtype.kind == "i":
        lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise BadInput(
                f"input {quote(name)}: integers must fit in int32 [{lo}, {hi}], got values outside it"
            )
        arr = arr.astype(np.int32)
    return arr


def parse_dtype(raw: Any, name: str) -> np.dtype[Any]:
    if not isinstance(raw, str):
        raise BadInput(f"input {quote(name)}: 'dtype' must be a string like 'float32', got {describe(raw)}")
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError):
        raise BadInput(f"input {quote(name)}: unknown dtype {quote(raw)}") from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise BadInput(
            f"input {quote(name)}: dtype must be bool, int, uint or float, got {quote(raw)} ({dtype.kind!r} kind)"
        )
    return dtype


def parse_shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, (list, tuple)) or len(raw) > _MAX_RANK:
        raise BadInput(
            f"input {quote(name)}: 'shape' must be a list of at most {_MAX_RANK} dimensions, "
            f"got {describe(raw)}"
        )
    for d in raw:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise BadInput(
                f"input {quote(name)}: every dimension must be a positive integer, got shape {_fmt_shape(raw)}"
            )
    return tuple(raw)


def array_to_json(arr: np.ndarray) -> dict[str, Any]:
    """An output array for the JSON result: dtype, shape and base64 of the raw bytes."""
    arr = contiguous(arr)
    return {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "b64": base64.b64encode(arr.tobytes()).decode("ascii"),
    }


def array_from_json(obj: Mapping[str, Any]) -> np.ndarray:
    """Inverse of ``array_to_json`` (trusted input: it comes from our own workers)."""
    dtype = np.dtype(obj["dtype"])
    return np.frombuffer(base64.b64decode(obj["b64"]), dtype=dtype).reshape(obj["shape"])


def describe(value: Any) -> str:
    """What came, by type and size only: a value may be (part of) someone's input."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    if isinstance(value, Mapping):
        return f"a map of {len(value)} entries" if value else "an empty map"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items" if value else "an empty list"
    return f"a value of type {type(value).__name__}"


def quote(value: Any) -> str:
    """A sender-chosen name for a message: quoted, shortened if long; other types by type."""
    if not isinstance(value, str):
        return describe(value)
    if len(value) > _QUOTE_MAX:
        return repr(value[:_QUOTE_MAX]) + f"... ({len(value)} characters)"
    return repr(value)


def _fmt_shape(raw: list[Any] | tuple[Any, ...]) -> str:
    dims = [
        str(d)
        if isinstance(d, int) and not isinstance(d, bool) and abs(d) < 10**18
        else f"<{type(d).__name__}>"
        for d in raw
    ]
    return "[" + ", ".join(dims) + "]"
