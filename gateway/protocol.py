"""Open Inference Protocol tensors <-> numpy: JSON data and the binary tensor data extension.

Pure (no I/O), so every rule is unit-tested without a server. A request body is a JSON
header, optionally followed by raw tensor bytes (``Inference-Header-Content-Length``
says where the header ends; an input with ``parameters.binary_data_size`` takes its
bytes from there, in input order). Nothing is allocated from a size the sender
declares: a declared shape must agree with the data or bytes actually sent before any
array is made. Error messages name what was expected and what came, never the values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from gateway.schemas import InferRequest, RequestInput
from tasks.codec import quote
from tasks.errors import BadInput
from tasks.schema import TensorSpec
from tasks.validation import cast_inputs

#: The protocol's datatypes inferq's models can take or give, and their numpy dtypes.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_BY_DTYPE = {dt: name for name, dt in DATATYPES.items()}

#: The binary content type of a response with binary outputs (what Triton answers).
BINARY_MEDIA_TYPE = "application/octet-stream"
JSON_MEDIA_TYPE = "application/json"
#: Request and response header: the length of the JSON header before the binary data.
HEADER_LENGTH = "inference-header-content-length"
#: How many validation problems a 400 lists (a generated body can have hundreds).
_MAX_PROBLEMS = 3
#: The most digits a header length may have (a body is never near 10**18 bytes).
_MAX_DIGITS = 18


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The protocol's name of a numpy dtype (``float32`` -> ``FP32``)."""
    dt = np.dtype(dtype)
    name = _BY_DTYPE.get(dt.newbyteorder("=") if dt.byteorder not in "=|" else dt)
    if name is None:
        raise ValueError(f"dtype {dt} has no Open Inference Protocol datatype")
    return name


def dtype_of(datatype: str, what: str) -> np.dtype[Any]:
    """The numpy dtype of a protocol datatype; ``BadInput`` naming the supported ones."""
    dt = DATATYPES.get(datatype)
    if dt is None:
        raise BadInput(
            f"{what}: expected a datatype among {', '.join(DATATYPES)}, got {quote(datatype)}"
            + (" (inferq models take numeric tensors)" if datatype in ("BYTES", "BF16") else "")
        )
    return dt


def fmt_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("-1" if s is None or s < 0 else str(s) for s in shape) + "]"


@dataclass(frozen=True)
class Tensor:
    """One input tensor of a request, decoded: the array keeps the request's batch axis."""

    name: str
    datatype: str
    array: np.ndarray


@dataclass(frozen=True)
class OutputWanted:
    """An output the request names; ``binary`` None follows the request's ``binary_data_output``."""

    name: str
    binary: bool | None


@dataclass(frozen=True)
class DecodedRequest:
    """An inference request with its tensors as arrays."""

    id: str | None
    inputs: tuple[Tensor, ...]
    #: None: every output of the model, as the protocol's default.
    outputs: tuple[OutputWanted, ...] | None
    binary_output: bool
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        """Whether output ``name`` goes as raw bytes (its own ``binary_data`` wins)."""
        for out in self.outputs or ():
            if out.name == name and out.binary is not None:
                return out.binary
        return self.binary_output


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """``Inference-Header-Content-Length`` as a checked offset into the body (None: JSON only)."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only (str.isdigit() also takes a superscript, which int() refuses), and
    # no more of them than int() reads: anything else is the caller's mistake, not a 500.
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS or int(text) > body_length:
        raise BadInput(
            f"header Inference-Header-Content-Length: expected the JSON header's length in bytes "
            f"(0 to the body's {body_length}), got {quote(value)}"
        )
    return int(value)


def decode_request(body: bytes, header_length: int | None) -> DecodedRequest:
    """A request body (JSON, or JSON header + binary tensors) as arrays; ``BadInput`` else."""
    header = body if header_length is None else body[:header_length]
    binary = memoryview(body)[len(header) :]
    request = _parse_header(header)
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for i, inp in enumerate(request.inputs):
        what = f"input {quote(inp.name)}"
        if inp.name in seen:
            raise BadInput(f"{what}: appears twice; each input is given once")
        seen.add(inp.name)
        dtype = dtype_of(inp.datatype, what)
        size = (inp.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadInput(f"{what}: binary_data_size must be a byte count, got {quote(str(size))}")
            if offset + size > len(binary):
                raise BadInput(
                    f"{what}: binary_data_size {size} runs past the {len(binary)} bytes after the JSON header"
                    + ("" if header_length is not None else " (no Inference-Header-Content-Length header)")
                )
            array = _from_bytes(what, binary[offset : offset + size], inp, dtype)
            offset += size
        elif inp.data is not None:
            array = _from_json(what, inp, dtype)
        else:
            raise BadInput(f"{what} (request input {i}): expected data, or parameters.binary_data_size")
        inputs.append(Tensor(inp.name, inp.datatype, array))
    if offset != len(binary):
        raise BadInput(
            f"the body has {len(binary)} bytes after the JSON header; the inputs' binary_data_size add up to {offset}"
        )
    params = dict(request.parameters or {})
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadInput(
            f"parameter binary_data_output: expected true or false, got {quote(str(binary_output))}"
        )
    outputs = None
    if request.outputs is not None:
        wanted = []
        for out in request.outputs:
            out_params = out.parameters or {}
            if "classification" in out_params:
                raise BadInput(f"output {quote(out.name)}: the classification extension is not supported")
            flag = out_params.get("binary_data")
            if flag is not None and not isinstance(flag, bool):
                raise BadInput(f"output {quote(out.name)}: binary_data must be true or false")
            wanted.append(OutputWanted(out.name, flag))
        outputs = tuple(wanted)
    return DecodedRequest(request.id, tuple(inputs), outputs, binary_output, params)


def _parse_header(header: bytes | memoryview) -> InferRequest:
    try:
        return InferRequest.model_validate_json(bytes(header))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False)[:_MAX_PROBLEMS]:
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{loc}: {err['msg']}")
        more = exc.error_count() - len(problems)
        raise BadInput(
            "request: expected an inference request {inputs: [{name, shape, datatype, data}], ...}; "
            + "; ".join(problems)
            + (f"; {more} more" if more > 0 else "")
        ) from None


def _elements(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _from_json(what: str, inp: RequestInput, dtype: np.dtype[Any]) -> np.ndarray:
    try:
        arr = np.asarray(inp.data)
    except (ValueError, TypeError, RecursionError):
        raise BadInput(f"{what}: data must be a flat or rectangular nested list of numbers") from None
    want = _elements(inp.shape)
    if arr.size != want:
        raise BadInput(f"{what}: shape {fmt_shape(inp.shape)} needs {want} values, got {arr.size} in data")
    if dtype.kind == "b":
        if arr.dtype.kind != "b" and arr.size:
            raise BadInput(f"{what}: datatype BOOL needs true/false values, got {_json_kind(arr)}")
        return arr.astype(np.bool_).reshape(inp.shape)
    if arr.dtype.kind not in "iuf" and arr.size:
        raise BadInput(f"{what}: datatype {inp.datatype} needs numbers, got {_json_kind(arr)}")
    arr = arr.reshape(inp.shape)
    # JSON numbers arrive as int64/float64: cast where no value changes, refuse otherwise.
    cast: np.ndarray = cast_inputs({inp.name: arr}, [TensorSpec(inp.name, (), dtype.name)])[inp.name]
    return cast


def _json_kind(arr: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "O": "mixed or nested values"}.get(arr.dtype.kind, "numbers")


def _from_bytes(what: str, raw: memoryview, inp: RequestInput, dtype: np.dtype[Any]) -> np.ndarray:
    want = _elements(inp.shape) * dtype.itemsize
    if len(raw) != want:
        raise BadInput(
            f"{what}: shape {fmt_shape(inp.shape)} of {inp.datatype} is {want} bytes, "
            f"binary_data_size says {len(raw)}"
        )
    arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(inp.shape)
    if dtype.kind == "b":  # any non-zero byte is true
        truth: np.ndarray = arr.view(np.uint8) != 0
        return truth
    return arr.astype(dtype, copy=True)  # native order, and not a view of the request body


@dataclass(frozen=True)
class EncodedResponse:
    """A response body and how to send it."""

    body: bytes
    media_type: str
    #: The JSON header's length when binary data follows it (the response header's value).
    header_length: int | None


def output_json(name: str, arr: np.ndarray, *, binary: bool, as_list: bool = False) -> dict[str, Any]:
    """One output's entry in a response header; its data inline unless ``binary``.

    Inline data is a pre-rendered JSON fragment for ``orjson``, or with ``as_list`` a
    plain list (for a pydantic model to hold).
    """
    out: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
    if binary:
        out["parameters"] = {"binary_data_size": int(arr.nbytes)}
    elif as_list:
        out["data"] = np.ascontiguousarray(arr).reshape(-1).tolist()
    else:
        out["data"] = _flat(arr)
    return out


def _flat(arr: np.ndarray) -> Any:
    flat = np.ascontiguousarray(arr).reshape(-1)
    # orjson writes a numpy array without a Python float per element; NaN and inf become null.
    return orjson.Fragment(orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY))


def encode_response(
    head: Mapping[str, Any], outputs: Sequence[tuple[str, np.ndarray, bool]]
) -> EncodedResponse:
    """``head`` (model_name, id, parameters…) plus outputs ``(name, array, binary)``.

    With no binary output the body is plain JSON; else the JSON header, then each binary
    output's bytes (little-endian, row-major; BOOL one byte each) in output order.
    """
    doc = dict(head)
    doc["outputs"] = [output_json(name, arr, binary=binary) for name, arr, binary in outputs]
    header = orjson.dumps(doc)
    blobs = [_le_bytes(arr) for _, arr, binary in outputs if binary]
    if not blobs:
        return EncodedResponse(header, JSON_MEDIA_TYPE, None)
    return EncodedResponse(b"".join([header, *blobs]), BINARY_MEDIA_TYPE, len(header))


def _le_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype.kind == "b":
        return np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
