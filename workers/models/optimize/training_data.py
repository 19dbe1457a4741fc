"""The examples ``prune --fine-tune`` and ``distill --data`` train on, and those they are
judged on.

A DATA file is an ``.npz`` holding ``x`` (inputs) and, optionally, ``y`` (integer
labels), or an ``.npy`` of inputs with the labels in a second ``.npy`` (``--labels``),
the form ``build-examples`` writes (``data/train_x.npy`` + ``data/train_y.npy``).
Everything is checked against the model before a step of training runs: a shape
mismatch found after minutes of work, or labels that silently train the wrong
classes, cost more than a clear refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.errors import BadInput

#: The held-out split ``build-examples`` writes beside a model (``<models>/<name>/data/``).
HELDOUT_X = "heldout_x.npy"
HELDOUT_Y = "heldout_y.npy"


@dataclass(frozen=True)
class Examples:
    """Inputs (float32, batch axis first) and their labels when known."""

    x: np.ndarray
    y: np.ndarray | None
    #: Where they came from, for reports and error messages.
    source: str

    def __len__(self) -> int:
        return len(self.x)


def load_examples(path: Path, labels: Path | None = None, *, what: str = "--data") -> Examples:
    """Read a DATA file (and its labels); ``BadInput`` naming ``what`` when it cannot."""
    if not path.is_file():
        raise BadInput(f"{what} {path} does not exist (expected an .npz with x[, y] or an .npy of inputs)")
    y: np.ndarray | None = None
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise BadInput(
                        f"{what} {path} has arrays {z.files}; expected x (inputs) and optionally y"
                    )
                x = np.asarray(z["x"])
                y = np.asarray(z["y"]) if "y" in z.files else None
        elif path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            raise BadInput(f"{what} {path}: expected an .npz (x[, y]) or an .npy of inputs")
        if labels is not None:
            if y is not None:
                raise BadInput(f"{what} {path} holds labels (y) already; drop --labels")
            if not labels.is_file() or labels.suffix != ".npy":
                raise BadInput(f"labels {labels}: expected an existing .npy of integer labels")
            y = np.load(labels, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # a truncated or foreign file
        raise BadInput(f"{what} {path} cannot be read as numpy data: {exc}") from None
    return Examples(x=x, y=y, source=str(path))


def check_examples(data: Examples, input_shape: tuple[int, ...], classes: int, *, what: str) -> Examples:
    """The same examples as float32 inputs of the model's shape and int64 labels in range.

    ``BadInput`` for inputs of another shape (one input alone, without its batch axis,
    included), non-numeric inputs, labels that do not pair up with the inputs or name a
    class the model does not have.
    """
    x = data.x
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != input_shape:
        raise BadInput(
            f"{what} {data.source}: inputs of shape {tuple(x.shape)}, but the model takes "
            f"(N, {', '.join(map(str, input_shape))}) (data of the wrong shape)"
        )
    if len(x) == 0:
        raise BadInput(f"{what} {data.source} holds no examples")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise BadInput(f"{what} {data.source}: inputs of dtype {x.dtype}, expected numbers")
    y = data.y
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise BadInput(f"{what} {data.source}: {len(x)} inputs but labels of shape {tuple(y.shape)}")
        if not np.issubdtype(y.dtype, np.integer):
            raise BadInput(f"{what} {data.source}: labels of dtype {y.dtype}, expected integer class ids")
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise BadInput(
                f"{what} {data.source}: labels run from {y.min()} to {y.max()}, the model has {classes} classes"
            )
        y = y.astype(np.int64)
    return Examples(x=x.astype(np.float32, copy=False), y=y, source=data.source)


def heldout(data_dir: Path) -> Examples | None:
    """The held-out split kept beside a model (``build-examples``), if there is one."""
    xp, yp = data_dir / HELDOUT_X, data_dir / HELDOUT_Y
    if not (xp.is_file() and yp.is_file()):
        return None
    return load_examples(xp, yp, what="held-out data")


def eval_examples(
    model_data: Path, data: Path | None, labels: Path | None, input_shape: tuple[int, ...], classes: int
) -> Examples | None:
    """What accuracy is measured on: ``--eval-data`` (labelled), else the held-out split
    kept beside the model (``model_data``), else None (no accuracy is reported)."""
    if labels is not None and data is None:
        raise BadInput("--eval-labels goes with --eval-data")
    found = load_examples(data, labels, what="--eval-data") if data is not None else heldout(model_data)
    if found is None:
        return None
    found = check_examples(found, input_shape, classes, what="--eval-data")
    if found.y is None:
        raise BadInput(f"--eval-data {found.source} has no labels: accuracy needs them (--eval-labels)")
    return found
