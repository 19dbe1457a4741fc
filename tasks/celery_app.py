"""A module-level Celery app for the plain ``celery`` command.

``celery -A tasks.celery_app inspect ping`` (or ``stats``, ``active_queues``,
``status``, ``events``...) talks to running inferq workers with inferq's own
settings: the same broker, TLS options, timeouts and JSON remote control as
``inferq worker`` and ``inferq flower``.

Importing this module reads the ``INFERQ_*`` variables: it is an entry point (the
``celery`` command's), like ``ops.cli``. Library code builds its own app with
``tasks.app.create_app(settings)`` instead. It imports nothing heavy (no TensorFlow,
no LiteRT) and registers no task: jobs are run by ``inferq worker``, not by
``celery -A tasks.celery_app worker``.
"""

from __future__ import annotations

from tasks.app import create_app
from tasks.settings import Settings

app = create_app(Settings.from_env())
