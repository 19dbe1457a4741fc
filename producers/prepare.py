"""A submission's inputs, checked and encoded before anything is sent.

The sync ``Client`` and the ``AsyncClient`` submit the same way; only how they talk to
Redis differs. What every input becomes comes first, with no I/O: ``prepare`` makes
inputs named arrays, cast where no value changes, validated against the model's inputs,
encoded and checked against the payload limit; many inputs that share names, shapes and
dtypes stay one ``Stacked`` array per input name (checked once for all rows, sent as
tensors). What is then sent, chunk by chunk, is ``producers/plans.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from tasks import constants as C
from tasks.codec import encode_inputs
from tasks.errors import BadInput, PayloadTooLarge
from tasks.schema import ModelInfo
from tasks.settings import Settings
from tasks.validation import cast_inputs, validate_inputs, validate_rows

Prepared = tuple[dict[str, np.ndarray], bytes]  # (named inputs, encoded payload)


class Stacked(Sequence[Prepared]):
    """Many inputs of one model as one array per input name (row ``i`` is input ``i``),
    checked once for all: what ``prepare`` returns for a bulk submission.

    A slice is a ``Stacked`` of views (a chunk costs no copy); an item is the
    ``Prepared`` of that one input, encoded when asked for (a caller that wants a list
    of ``Prepared`` still gets one).
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self._n = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Prepared: ...
    @overload
    def __getitem__(self, i: slice) -> Stacked: ...
    def __getitem__(self, i: int | slice) -> Prepared | Stacked:
        if isinstance(i, slice):
            return Stacked({k: v[i] for k, v in self.arrays.items()})
        row = self.row(i)
        return row, encode_inputs(row)

    def __iter__(self) -> Iterator[Prepared]:
        return (self[i] for i in range(self._n))

    def row(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.arrays.items()}


def _stack(
    info: ModelInfo, xs: Iterable[Any] | np.ndarray | Mapping[str, Any]
) -> dict[str, np.ndarray] | list[Any]:
    """Inputs as one array per input name when they can be (an array with a leading axis
    over inputs, a mapping of name -> such an array, or inputs that share names, shapes
    and dtypes); else the inputs as a list."""
    if isinstance(xs, np.ndarray) and len(info.inputs) == 1 and xs.ndim >= 1:
        return {info.inputs[0].name: xs} if len(xs) >= 2 else list(xs)
    if isinstance(xs, Mapping):
        columns = input_columns(xs)
        n = len(next(iter(columns.values())))
        return columns if n >= 2 else [{k: v[i] for k, v in columns.items()} for i in range(n)]
    items = list(xs)
    if len(items) < 2:
        return items
    named = [named_inputs(info, x) for x in items]
    first = named[0]
    same = all(
        n.keys() == first.keys()
        and all(v.shape == first[k].shape and v.dtype == first[k].dtype for k, v in n.items())
        for n in named
    )
    if not same or any(a.dtype.kind not in "biuf" for a in first.values()):
        return named
    return {k: np.stack([n[k] for n in named]) for k in first}


def input_columns(xs: Mapping[Any, Any]) -> dict[str, np.ndarray]:
    """Many inputs of a model given as name -> array, the leading axis over inputs (what a
    model of several inputs is sent as in bulk: ``{"a": a_rows, "b": b_rows}``), checked:
    ``BadInput`` names an input that is not an array of rows, or one whose count of rows
    differs from the first's."""
    if not xs:
        raise BadInput("expected input name -> array of inputs (one row per input), got an empty mapping")
    columns = {str(k): _as_array(v, str(k)) for k, v in xs.items()}
    (first, a), *_ = columns.items()
    for name, v in columns.items():
        if v.ndim < 1:
            raise BadInput(f"input {name!r}: expected an array with one row per input, got a scalar")
        if v.dtype.kind not in "biuf":
            raise BadInput(f"input {name!r}: expected an array of numbers, got dtype {v.dtype}")
        if len(v) != len(a):
            raise BadInput(
                f"input {name!r}: {len(v)} rows, but input {first!r} has {len(a)}: one row per input"
            )
    return columns


def _as_array(x: Any, name: str) -> np.ndarray:
    """An input as an array; a ragged nested list is ``BadInput``, never numpy's ValueError."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"input {name!r}: expected a rectangular array of numbers ({exc})") from None


def named_inputs(info: ModelInfo, x: Any) -> dict[str, np.ndarray]:
    """One input (array) or named inputs (mapping) as a name -> array dict."""
    if isinstance(x, Mapping):
        return {str(k): _as_array(v, str(k)) for k, v in x.items()}
    if len(info.inputs) != 1:
        raise BadInput(f"{info.key} has inputs {[s.name for s in info.inputs]}; pass a dict of name -> array")
    return {info.inputs[0].name: _as_array(x, info.inputs[0].name)}


def check_options(chunk_size: int, priority: str, deadline_ms: Any = None) -> None:
    """A submission's options, checked before any I/O (``BadInput`` naming the option)."""
    if chunk_size < 1:
        raise BadInput(f"chunk_size must be >= 1, got {chunk_size}")
    if priority not in C.PRIORITIES:
        raise BadInput(f"priority must be one of {sorted(C.PRIORITIES)}, got {priority!r}")
    if deadline_ms is not None:
        # A bool is an int to Python, and a string would fail only later, as a TypeError
        # deep in building the message; 0 or less would expire every job unseen.
        number = isinstance(deadline_ms, (int, float, np.integer, np.floating)) and not isinstance(
            deadline_ms, bool
        )
        if not number or not math.isfinite(deadline_ms) or deadline_ms <= 0:
            raise BadInput(
                f"deadline_ms must be a number of milliseconds > 0 (or None: no deadline), got {deadline_ms!r}"
            )


def prepare(settings: Settings, info: ModelInfo, xs: Iterable[Any], *, validate: bool) -> Sequence[Prepared]:
    """Every input checked and encoded before anything is sent (one bad input sends nothing).

    Inputs are cast to the model's dtypes where no value changes; a lossy cast raises
    ``BadInput`` naming the expected dtype. ``validate=False`` sends each input exactly
    as given (the worker checks it). Many inputs that share names, shapes and dtypes
    come back ``Stacked``: cast, checked and later sent as one array per input name.
    """
    stacked = _stack(info, xs)
    if isinstance(stacked, dict):
        return _prepare_stacked(settings, info, stacked, validate=validate)
    prepared: list[Prepared] = []
    for x in stacked:
        inputs = named_inputs(info, x)
        if validate:
            inputs = validate_inputs(cast_inputs(inputs, info.inputs), info.inputs)
        payload = encode_inputs(inputs)
        if len(payload) > settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"input payload is {len(payload)} bytes, over the limit of {settings.max_payload_bytes} bytes"
            )
        prepared.append((inputs, payload))
    return prepared


def _prepare_stacked(
    settings: Settings, info: ModelInfo, arrays: dict[str, np.ndarray], *, validate: bool
) -> Stacked:
    if validate:
        arrays, bad = validate_rows(cast_inputs(arrays, info.inputs), info.inputs)
        if bad:
            first = min(bad)
            raise BadInput(f"{bad[first].message} (input {first} of {len(next(iter(arrays.values())))})")
    out = Stacked(arrays)
    size = len(encode_inputs(out.row(0)))  # every row encodes to the same size
    if size > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"input payload is {size} bytes, over the limit of {settings.max_payload_bytes} bytes"
        )
    return out
