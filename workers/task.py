"""The ``inferq.predict`` Celery task: one job through the pipeline, result to the backend."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, Task

from tasks.constants import PREDICT_TASK
from tasks.errors import InferqError
from workers.pipeline import Pipeline


class Counters:
    """Jobs done by this process, for the heartbeat and ``inferq status``."""

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0


def register_predict(app: Celery, pipeline: Pipeline, counters: Counters) -> Task:
    """Bind the task to this process's loaded models (the models are never pickled)."""

    # throws=: our own errors are expected outcomes, logged in one line, not a traceback.
    @app.task(name=PREDICT_TASK, bind=True, throws=(InferqError,))  # type: ignore[untyped-decorator]
    def predict(self: Task, request: Any) -> dict[str, Any]:
        received_at = time.time()
        try:
            job = pipeline.prepare(self.request.id, request, received_at)
            [result] = pipeline.run([job])
        except InferqError:
            counters.failed += 1
            raise
        counters.succeeded += 1
        return result.to_wire()

    return predict
