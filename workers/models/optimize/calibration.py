"""Sample inputs for calibration (and for ``compare``): ``.npy``, ``.npz`` or images.

- ``.npy``: one array of inputs along the first axis, for a model with one input (a
  single input without that axis is taken as one sample).
- ``.npz``: one array per input name; a single-input model also takes an ``.npz`` with
  one array, whatever its key.
- a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``), for a model with one
  ``HxWxC`` input: each is converted to grey (C=1) or RGB (C=3), resized to HxW and
  scaled from 0..255 to ``image_range`` (0..1 by default, as ``inferq submit`` does;
  MobileNet-style models want -1..1).

Every array is checked against the model's input shapes and cast to its dtype, so a
wrong file is named here rather than deep inside the converter.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.errors import BadInput
from tasks.schema import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Calibration rarely gains from more: the converter's own examples use 100 to 500.
DEFAULT_CALIBRATION_SAMPLES = 256


def read_arrays(
    path: Path,
    inputs: Sequence[TensorSpec],
    *,
    limit: int | None = None,
    image_range: tuple[float, float] = (0.0, 1.0),
) -> dict[str, np.ndarray]:
    """Inputs by name, each with a leading axis of samples (at most ``limit``)."""
    if not path.exists():
        raise BadInput(f"data {path} does not exist")
    if path.is_dir():
        arrays = {_single(inputs, path).name: _images(path, _single(inputs, path), limit, image_range)}
    elif path.suffix == ".npy":
        arrays = {_single(inputs, path).name: _npy(path)}
    elif path.suffix == ".npz":
        arrays = _npz(path, inputs)
    else:
        raise BadInput(f"data {path}: expected .npy, .npz or a folder of images")
    out = {spec.name: _checked(arrays[spec.name], spec, path) for spec in inputs}
    counts = {len(a) for a in out.values()}
    if len(counts) != 1:
        raise BadInput(f"data {path}: inputs have different numbers of samples {sorted(counts)}")
    if not counts.pop():
        raise BadInput(f"data {path} holds no samples")
    return {k: v[:limit] for k, v in out.items()} if limit is not None else out


def calibration_samples(
    path: Path,
    inputs: Sequence[TensorSpec],
    *,
    limit: int = DEFAULT_CALIBRATION_SAMPLES,
    image_range: tuple[float, float] = (0.0, 1.0),
) -> list[dict[str, np.ndarray]]:
    """One ``{input name: array with a batch axis of 1}`` per sample, as converters take them."""
    arrays = read_arrays(path, inputs, limit=limit, image_range=image_range)
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(n)]


def _single(inputs: Sequence[TensorSpec], path: Path) -> TensorSpec:
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise BadInput(
            f"data {path}: the model has {len(inputs)} inputs ({names}); give an .npz keyed by them"
        )
    return inputs[0]


def _npy(path: Path) -> np.ndarray:
    try:  # allow_pickle=False: object arrays are refused, never unpickled
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise BadInput(f"data {path}: not a plain numeric .npy file ({exc})") from None


def _npz(path: Path, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            found = {k: np.asarray(z[k]) for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"data {path}: not a plain numeric .npz file ({exc})") from None
    if len(inputs) == 1 and len(found) == 1:
        return {inputs[0].name: next(iter(found.values()))}
    missing = [s.name for s in inputs if s.name not in found]
    if missing:
        raise BadInput(f"data {path} lacks arrays for inputs {missing} (it has {sorted(found)})")
    return found


def _images(
    folder: Path, spec: TensorSpec, limit: int | None, image_range: tuple[float, float]
) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(spec.shape) != 3 or spec.shape[2] not in (1, 3):
        raise BadInput(f"data {folder}: images need a model input HxWx1 or HxWx3, got {spec.describe()}")
    h, w, c = spec.shape
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise BadInput(f"data {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    lo, hi = image_range
    out = []
    for f in files:
        try:
            img = Image.open(f).convert("L" if c == 1 else "RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise BadInput(f"data {f}: expected an image; it does not decode ({exc})") from None
        if h and w:
            img = img.resize((w, h))
        arr = np.asarray(img, dtype=np.float32) / 255.0 * (hi - lo) + lo
        out.append(arr[..., None] if c == 1 else arr)
    return np.stack(out)


def _checked(arr: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    """``arr`` with a samples axis, in the input's dtype; ``BadInput`` naming both shapes."""
    if arr.dtype.kind not in "biuf":
        raise BadInput(f"data {path}: input {spec.name!r} has dtype {arr.dtype}, not numbers")
    given = list(arr.shape)
    if arr.ndim == len(spec.shape):
        arr = arr[None]  # one sample without its axis
    fits = arr.ndim == len(spec.shape) + 1 and all(
        s is None or s == d for s, d in zip(spec.shape, arr.shape[1:], strict=True)
    )
    if not fits:
        raise BadInput(
            f"data {path}: input {spec.name!r} expects samples of shape "
            f"{spec.describe()}, got an array of shape {given}"
        )
    return arr.astype(spec.dtype, copy=False)
