"""Check decoded inputs against a model's input specs, before any batching.

Pure logic, shared by producers (fail fast, before a round trip) and workers (the
authority: a raw Celery client can send anything).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tasks.codec import quote
from tasks.errors import BadInput
from tasks.schema import TensorSpec

#: How many input names a message lists (a sender may send thousands).
_MAX_NAMES = 8


def cast_inputs(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Cast each input to its spec's dtype where no value changes meaning; refuse lossy casts.

    A web backend's numbers arrive as JSON, so as float64 or int64, while most models take
    float32: making every caller look up the model's dtype and cast is busywork. Safe here:
    float to a narrower float when every finite value fits its range (precision is rounded,
    as any float32 model input is); int to float; float or int to int when every value is
    a whole number within the target's range. NaN and inf are carried over, for
    ``validate_inputs`` to refuse by name. Everything else (bool, complex, strings, a
    fraction for an int input, a value out of range) is left or refused with a message
    naming the expected dtype. Inputs not in ``specs`` are left for validation to name.
    """
    out = dict(inputs)
    for spec in specs:
        arr = out.get(spec.name)
        if arr is None:
            continue
        want = np.dtype(spec.dtype)
        if arr.dtype == want or arr.dtype.kind not in "iuf" or want.kind not in "iuf":
            continue  # identical, or not a numeric cast: validate_inputs names the mismatch
        if arr.size and want.kind == "f" and (arr.dtype.kind in "iu" or arr.dtype.itemsize > want.itemsize):
            finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
            top = float(np.finfo(want).max)
            if finite.size and float(np.abs(finite.astype(np.float64)).max()) > top:
                raise BadInput(
                    f"input {spec.name!r}: expected dtype {want.name}, got {arr.dtype.name} "
                    f"with values outside {want.name}'s range (±{top:.3g})"
                )
        elif arr.size and want.kind in "iu":
            if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (np.mod(arr, 1) != 0).any()):
                raise BadInput(
                    f"input {spec.name!r}: expected dtype {want.name}, got {arr.dtype.name} "
                    "with values that are not whole numbers"
                )
            info = np.iinfo(want)
            # Compared as Python numbers: a float64 2**63 is not <= int64's max, though
            # numpy's own comparison rounds that max up to 2**63 and says it is.
            low, high = arr.min().item(), arr.max().item()
            if (
                low < info.min
                or high > info.max
                or (arr.dtype.kind == "f" and high >= 2.0 ** (info.bits - (info.kind == "i")))
            ):
                raise BadInput(
                    f"input {spec.name!r}: expected dtype {want.name}, got {arr.dtype.name} "
                    f"with values outside {want.name}'s range [{info.min}, {info.max}]"
                )
        out[spec.name] = arr.astype(want)
    return out


def validate_inputs(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Return the inputs in spec order, or raise ``BadInput`` naming expected vs got."""
    expected = {s.name for s in specs}
    got = set(inputs)
    if got != expected:
        raise BadInput(
            f"expected inputs {_names(expected)}, got {_names(got)}"
            + (f" (missing {_names(expected - got)})" if expected - got else "")
            + (f" (unexpected {_names(got - expected)})" if got - expected else "")
        )
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = inputs[spec.name]
        want = np.dtype(spec.dtype)
        if arr.dtype != want:
            raise BadInput(
                f"input {spec.name!r}: expected dtype {want.name}, got "
                f"{arr.dtype.name if arr.dtype.name != want.name else arr.dtype.str}"
                + (f" (cast with x.astype(np.{want.name}))" if arr.dtype.kind in "iuf" else "")
            )
        if arr.size == 0:
            raise BadInput(
                f"input {spec.name!r}: expected shape {_fmt(spec.shape)}, got an empty array {arr.shape}"
            )
        if arr.ndim != len(spec.shape) or any(
            s is not None and s != d for s, d in zip(spec.shape, arr.shape, strict=False)
        ):
            hint = ""
            if arr.ndim == len(spec.shape) + 1 and arr.shape[0] == 1:
                hint = " (send one input without the batch axis)"
            raise BadInput(
                f"input {spec.name!r}: expected shape {_fmt(spec.shape)}, got {list(arr.shape)}{hint}"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(np.isinf(arr).sum())
            raise BadInput(f"input {spec.name!r}: expected finite values, got {n_nan} NaN and {n_inf} inf")
        out[spec.name] = arr
    return out


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"


def _names(names: Iterable[str]) -> str:
    """Input names for a message; a sender's names are shortened, and only a few shown."""
    ordered = sorted(names)
    shown = ", ".join(quote(n) for n in ordered[:_MAX_NAMES])
    more = f", ... {len(ordered) - _MAX_NAMES} more" if len(ordered) > _MAX_NAMES else ""
    return f"[{shown}{more}]"
