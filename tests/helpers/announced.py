"""A model announced in Redis as a worker would announce it, with no worker behind it.

For client tests that need the client to know a model (its version and input spec)
without running one: jobs for it are claimed and queued, and stay queued.
"""

from __future__ import annotations

import redis

from tasks import constants as C
from tasks.schema import ModelInfo, TensorSpec
from tasks.wire import ModelAnnouncement


def tiny_model(name: str, *, width: int = 4, version: str = "1") -> ModelInfo:
    """``name:fp32`` taking one float32 vector ``x`` of ``width`` and giving ``y`` of 2."""
    return ModelInfo(
        name=name,
        variant="fp32",
        version=version,
        runtime="litert",
        inputs=(TensorSpec("x", (width,), "float32", "float32"),),
        outputs=(TensorSpec("y", (2,), "float32", "float32"),),
    )


def announce(backend: redis.Redis[bytes], info: ModelInfo) -> ModelInfo:
    backend.hset(C.MODELS_KEY, info.key, ModelAnnouncement.encode(info))
    return info
