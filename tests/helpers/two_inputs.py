"""A real two-input TFLite model, built with TensorFlow in a subprocess (tests only).

``y = relu(concat(a, b) @ w)`` and ``s = sum(a)``: inputs ``a`` (3 floats) and ``b``
(2 floats), outputs ``y`` (3) and ``s`` (1). Small enough to build in seconds; enough
to show that every input of a row reaches the model, and in which order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.schema import ModelInfo, TensorSpec

SCRIPT = """
import sys, numpy as np, tensorflow as tf
class M(tf.Module):
    def __init__(self):
        self.w = tf.Variable(np.arange(15, dtype=np.float32).reshape(5, 3) / 7 - 1)
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"),
                                  tf.TensorSpec([None, 2], tf.float32, name="b")])
    def __call__(self, a, b):
        return {"y": tf.nn.relu(tf.matmul(tf.concat([a, b], 1), self.w)),
                "s": tf.reduce_sum(a, 1, keepdims=True)}
m = M()
conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
open(sys.argv[1], "wb").write(conv.convert())
"""

F32 = "float32"


def two_inputs_info(version: str = "test", max_batch_size: int = 8) -> ModelInfo:
    return ModelInfo(
        name="two",
        variant="fp32",
        version=version,
        runtime="litert",
        inputs=(TensorSpec("a", (3,), F32, F32), TensorSpec("b", (2,), F32, F32)),
        outputs=(TensorSpec("y", (3,), F32, F32), TensorSpec("s", (1,), F32, F32)),
        max_batch_size=max_batch_size,
    )


def build_two_inputs(path: Path) -> Path:
    """Write the model's ``.tflite`` to ``path`` (needs TensorFlow)."""
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        check=True,
        capture_output=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return path
