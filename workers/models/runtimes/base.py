"""The runtime protocol every backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tasks.schema import ModelInfo


class Runtime(Protocol):
    """A loaded model: takes a batch of logical inputs, returns logical outputs by name.

    Inputs carry a leading batch axis and the logical dtypes of ``info.inputs``
    (float32 for a quantized image model): quantizing is the runtime's job.
    Not thread-safe: one instance per worker process, called from one thread.
    """

    info: ModelInfo

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
