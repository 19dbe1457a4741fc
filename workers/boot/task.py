"""The ``inferq.predict`` Celery task, registered so Celery and Flower know its name.

In a running worker its messages never reach this body: the model queues are read
by the worker's fetcher (``workers.serving.consumer``), which batches. The body is the
unbatched path for ``apply()``/eager calls, and documents what one job is.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, Task

from tasks.constants import PREDICT_TASK
from workers.serving.pipeline import Pipeline


def register_predict(app: Celery, pipeline: Pipeline) -> Task:
    @app.task(name=PREDICT_TASK, bind=True)  # type: ignore[untyped-decorator]
    def predict(self: Task, request: Any) -> dict[str, Any]:
        job = pipeline.prepare(self.request.id, request, time.time())
        [result] = pipeline.run([job])
        return result.to_wire()

    return predict
