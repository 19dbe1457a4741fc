"""Read an input for ``inferq submit`` from .npy, .json, .png or .jpg."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput
from tasks.schema import ModelInfo


def read_input(path: Path, info: ModelInfo) -> Any:
    """An array (one input, no batch axis) or a ``{name: array}`` mapping."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInput(f"input file {path} does not exist")
    if suffix == ".npy":
        # allow_pickle=False: an .npy with object arrays is refused, never unpickled.
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise BadInput(f"{path}: not a plain numeric .npy file ({exc})") from None
    if suffix == ".json":
        obj = _json(path)
        if isinstance(obj, dict):
            return {k: _json_array(v, f"{path.name}: input {k!r}") for k, v in obj.items()}
        return _json_array(obj, path.name)
    if suffix in (".png", ".jpg", ".jpeg"):
        return _image(path, info)
    raise BadInput(f"input file must be .npy, .json, .png or .jpg, got {path.name}")


def is_many(x: Any, info: ModelInfo) -> bool:
    """An array with one more leading axis than the model's single input: many inputs."""
    return (
        isinstance(x, np.ndarray)
        and len(info.inputs) == 1
        and x.ndim == len(info.inputs[0].shape) + 1
        and x.ndim > 1
        and all(s is None or s == d for s, d in zip(info.inputs[0].shape, x.shape[1:], strict=True))
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(
            f"{path}: expected JSON (a nested list of numbers, or an object of them by input name); "
            f"it does not parse: {exc}"
        ) from None


def _json_array(value: Any, name: str) -> np.ndarray:
    expected = "expected a rectangular nested list of numbers"
    try:
        arr = np.array(value)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise BadInput(f"{name}: {expected}; got {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise BadInput(f"{name}: {expected}, got dtype {arr.dtype}")
    return arr.astype(np.float32) if arr.dtype.kind == "f" else arr


def _image(path: Path, info: ModelInfo) -> np.ndarray:
    """Load and resize an image to the model's single image input, scaled to [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    if len(info.inputs) != 1 or len(info.inputs[0].shape) != 3:
        raise BadInput(f"{info.key} does not take a single HxWxC image input")
    h, w, c = info.inputs[0].shape
    try:
        img = Image.open(path).convert("L" if c == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:  # OSError: a truncated image
        raise BadInput(f"{path}: expected a PNG or JPEG image; it does not decode ({exc})") from None
    if h and w:
        img = img.resize((w, h))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if c == 1 else arr
