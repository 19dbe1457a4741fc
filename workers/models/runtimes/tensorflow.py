"""TensorFlow runtime: a SavedModel through its ``serving_default`` signature.

Imported only by workers that serve a SavedModel variant (TensorFlow costs ~1 GB of
RSS and seconds of start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ConfigError
from tasks.schema import ModelInfo, TensorSpec
from workers.models.registry import ModelEntry

_threads_set = False


def _tf(threads: int | None = None) -> Any:
    global _threads_set
    import tensorflow as tf

    if threads and not _threads_set:
        # Must happen before TensorFlow runs its first op; later calls raise.
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
        _threads_set = True
    return tf


def _signature(path: Path, threads: int | None = None) -> Any:
    tf = _tf(threads)
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a loadable SavedModel ({exc})") from None
    if "serving_default" not in loaded.signatures:
        raise ConfigError(f"{path}: SavedModel has no 'serving_default' signature")
    return loaded, loaded.signatures["serving_default"]


def _spec(name: str, ts: Any) -> TensorSpec:
    dims = [None if d is None else int(d) for d in ts.shape.as_list()]
    return TensorSpec(name=name, shape=tuple(dims[1:]), dtype=ts.dtype.name, tensor_dtype=ts.dtype.name)


def describe_savedmodel(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of a SavedModel's serving signature."""
    _, fn = _signature(path)
    _, kwargs = fn.structured_input_signature
    ins = tuple(_spec(n, ts) for n, ts in sorted(kwargs.items()))
    outs = tuple(_spec(n, ts) for n, ts in sorted(fn.structured_outputs.items()))
    return ins, outs


class TensorFlowRuntime:
    def __init__(self, entry: ModelEntry, threads: int) -> None:
        self.info: ModelInfo = entry.info
        self._loaded, self._fn = _signature(entry.path, threads)
        self._tf = _tf()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        out = self._fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {spec.name: out[spec.name].numpy() for spec in self.info.outputs}
