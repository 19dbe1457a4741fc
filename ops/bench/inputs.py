"""What ``bench`` and ``tune`` send: a pool of inputs, and each job's input drawn from it.

The pool is a user's ``.npy``, the model's held-out data, or random. A file that is not what ``--inputs`` expects is refused before any load starts, saying
what was expected and what came, rather than failing in numpy (``pickled data``) or
as one ``BadInput`` per job in the middle of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from tasks.errors import BadInput
from tasks.schema import ModelInfo
from tasks.settings import Settings

#: How every ``.npy`` file starts (numpy's format, version 1 to 3).
NPY_MAGIC = b"\x93NUMPY"
#: How a zip archive, so an ``.npz``, starts.
ZIP_MAGIC = b"PK\x03\x04"


def load_npy(path: Path) -> np.ndarray:
    """An array from an ``.npy`` file; ``BadInput`` naming what the file is instead."""
    expected = f"--inputs {path}: expected an .npy array of inputs (as numpy.save writes)"
    try:
        with path.open("rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise BadInput(f"{expected}, but it cannot be read: {exc.strerror}") from None
    if head.startswith(ZIP_MAGIC):
        raise BadInput(f"{expected}, got a zip archive (.npz?): save one array with numpy.save")
    if head != NPY_MAGIC:
        raise BadInput(f"{expected}, got a file that does not start with numpy's .npy header")
    try:
        loaded: np.ndarray = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays are pickles: never loaded from a file given to us
        raise BadInput(f"{expected}, got one that numpy cannot load without pickle: {exc}") from None
    except (OSError, EOFError) as exc:
        raise BadInput(f"{expected}, got a damaged or truncated one: {exc}") from None
    return loaded


def input_pool(inputs: Path | None, settings: Settings, info: ModelInfo) -> np.ndarray:
    """The inputs to draw from: ``inputs`` (an .npy), the model's held-out data, or random."""
    pool: np.ndarray
    if inputs is not None:
        pool = load_npy(inputs)
    elif (held := settings.models_dir / info.name / "data" / "heldout_x.npy").is_file():
        pool = np.load(held)
    else:
        if len(info.inputs) != 1 or None in info.inputs[0].shape:
            raise BadInput(f"{info.key}: give --inputs (several or dynamic inputs cannot be made up)")
        spec = info.inputs[0]
        shape = tuple(int(d) for d in spec.shape if d is not None)
        pool = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(spec.dtype)
    if len(info.inputs) == 1:
        want = list(info.inputs[0].shape)
        fits = pool.ndim == len(want) + 1 and all(
            w is None or w == g for w, g in zip(want, pool.shape[1:], strict=True)
        )
        if not fits or len(pool) == 0:
            raise BadInput(
                f"--inputs must hold one or more inputs of shape {want} (a leading axis of inputs), "
                f"got an array of shape {list(pool.shape)}"
            )
    return pool


class Inputs(Sequence[np.ndarray]):
    """``n`` inputs made on demand (a long closed-loop run of a 600 KB model input would
    not fit in memory): fresh ones are the pool plus a tiny per-job offset, so they are
    never cache hits; with probability ``repeat_fraction`` a job repeats an earlier
    input exactly (a cache hit, or a shared in-flight job)."""

    def __init__(self, pool: np.ndarray, n: int, repeat_fraction: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.pool = pool
        self.salt = np.float32(rng.uniform(0, 1e-3))
        repeat = rng.random(n) < repeat_fraction
        repeat[:1] = False  # the first job has nothing to repeat (and a zero-length run has none)
        picks = rng.random(n)
        # source[i]: the fresh job whose input job i sends (itself unless it repeats one).
        self.source = np.arange(n)
        for i in np.flatnonzero(repeat):
            self.source[i] = self.source[int(picks[i] * i)]

    def __len__(self) -> int:
        return len(self.source)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k = int(self.source[i])
        x: np.ndarray = self.pool[k % len(self.pool)]
        if np.issubdtype(x.dtype, np.floating):
            x = (x + self.salt + np.float32(k * 1e-7)).astype(x.dtype)
        return x


def pick_inputs(pool: np.ndarray, n: int, repeat_fraction: float, seed: int) -> Inputs:
    return Inputs(pool, n, repeat_fraction, seed)
