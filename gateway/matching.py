"""A decoded request against a model's specs: N inputs out, N results stacked back in.

The protocol puts a batch dimension in front of every tensor; inferq's specs describe
one input without it (a job is one input). So a request of N is checked against
``[-1, *spec.shape]`` here, in the protocol's words (datatype names, -1 for any size),
and sent as N jobs, one row of each input per job (``infer_many`` stacks their outputs
back along the same axis). Pure.
"""

from __future__ import annotations

import numpy as np

from gateway.protocol import DecodedRequest, datatype_of, fmt_shape
from tasks.codec import quote
from tasks.errors import BadInput
from tasks.schema import ModelInfo, TensorSpec

#: The most inputs one request may carry (each is a job; a bigger batch should be split).
MAX_BATCH = 4096


def protocol_shape(spec: TensorSpec) -> list[int]:
    """A spec's shape as the protocol's metadata shows it: batch and dynamic dims as -1."""
    return [-1, *(-1 if s is None else s for s in spec.shape)]


def expected_form(spec: TensorSpec) -> str:
    return f"datatype {datatype_of(spec.dtype)}, shape {fmt_shape(protocol_shape(spec))}"


def request_columns(request: DecodedRequest, info: ModelInfo) -> dict[str, np.ndarray]:
    """The request's N inputs, checked, as ``{name: array of N rows}``: row ``i`` of each
    is job ``i`` (the clients send such columns as tensors, checked once for all rows);
    ``BadInput`` naming the expected form."""
    given = {t.name: t for t in request.inputs}
    names = [s.name for s in info.inputs]
    if set(given) != set(names):
        expected = "; ".join(f"{quote(s.name)} ({expected_form(s)})" for s in info.inputs)
        raise BadInput(
            f"model {info.name} version {info.variant}: expected inputs {expected}; "
            f"got {', '.join(quote(n) for n in given) or 'none'}"
        )
    batch: int | None = None
    for spec in info.inputs:
        t = given[spec.name]
        arr = t.array
        want_dt = datatype_of(spec.dtype)
        fits = arr.ndim == len(spec.shape) + 1 and all(
            s is None or s == d for s, d in zip(spec.shape, arr.shape[1:], strict=True)
        )
        if t.datatype != want_dt or not fits:
            hint = " (the first dimension is the batch: N inputs)" if arr.ndim == len(spec.shape) else ""
            raise BadInput(
                f"input {quote(spec.name)}: expected {expected_form(spec)}; "
                f"got datatype {quote(t.datatype)}, shape {fmt_shape(arr.shape)}{hint}"
            )
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise BadInput(
                f"input {quote(spec.name)}: batch dimension {arr.shape[0]}, but other inputs have {batch}"
            )
    assert batch is not None
    if batch == 0:
        raise BadInput("expected at least one input: the batch dimension is 0")
    if batch > MAX_BATCH:
        raise BadInput(f"expected at most {MAX_BATCH} inputs in one request, got a batch of {batch}")
    return {name: given[name].array for name in names}


def output_names(request: DecodedRequest, info: ModelInfo) -> list[str]:
    """The outputs to answer, in the order asked (all, in the model's order, if none named)."""
    known = [s.name for s in info.outputs]
    if request.outputs is None:
        return known
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(
            f"model {info.name} version {info.variant}: expected outputs among "
            f"{', '.join(quote(n) for n in known)}; got {', '.join(quote(n) for n in unknown)}"
        )
    return list(dict.fromkeys(names))
