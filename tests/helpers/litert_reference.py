"""A model's outputs straight from LiteRT's interpreter: the reference no inferq code touches.

An HTTP client's answers are compared with this, so a mistake anywhere on the way
(client library, gateway, queue, worker) shows, including one that the direct
``producers.Client`` would share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def litert_outputs(model_file: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output name -> array for a batch of ``inputs`` (name -> array with a batch axis),
    run through the model's default signature."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model_file)).get_signature_runner()
    return {name: np.asarray(value) for name, value in runner(**inputs).items()}
