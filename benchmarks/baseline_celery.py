"""The baseline a user would write: a plain Celery task, one inference per task, JSON.

Run by benchmarks/system_bench.py as
``celery -A benchmarks.baseline_celery worker -P solo -Q baseline``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from celery import Celery

app = Celery(
    "baseline",
    broker=os.environ.get("BASELINE_BROKER_URL", "redis://127.0.0.1:6379/15"),
    backend=os.environ.get("BASELINE_BROKER_URL", "redis://127.0.0.1:6379/15"),
)
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"], task_acks_late=True
)

_interp: Any = None


def _model() -> Any:
    global _interp
    if _interp is None:  # once per worker process
        from ai_edge_litert.interpreter import Interpreter

        _interp = Interpreter(model_path=os.environ["BASELINE_MODEL"], num_threads=1)
        _interp.allocate_tensors()
    return _interp


@app.task(name="baseline.predict")
def predict(image: list[Any]) -> dict[str, Any]:
    received_at = time.time()
    interp = _model()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.set_tensor(inp["index"], np.asarray(image, dtype=np.float32)[None])
    interp.invoke()
    probs = interp.get_tensor(out["index"])[0]
    return {"probs": probs.tolist(), "received_at": received_at, "finished_at": time.time()}
