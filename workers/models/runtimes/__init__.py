"""Model runtimes: a small protocol, implemented for LiteRT and TensorFlow.

``load_runtime`` imports a backend only when a model needs it, so a worker serving
only TFLite models never imports TensorFlow.
"""

from __future__ import annotations

from workers.models.registry import ModelEntry
from workers.models.runtimes.base import Runtime


def load_runtime(entry: ModelEntry, threads: int) -> Runtime:
    """Load one model variant, failing with its path in the message."""
    if entry.info.runtime == "litert":
        from workers.models.runtimes.litert import LiteRTRuntime

        return LiteRTRuntime(entry, threads=threads)
    if entry.info.runtime == "tensorflow":
        from workers.models.runtimes.tensorflow import TensorFlowRuntime

        return TensorFlowRuntime(entry, threads=threads)
    from tasks.errors import ConfigError

    raise ConfigError(f"{entry.path}: unknown runtime {entry.info.runtime!r}")


__all__ = ["Runtime", "load_runtime"]
