"""The worker side, in the order a job meets it.

- ``boot/``: start-up. Load every model once per process, announce it, run the job
  path inside a Celery worker (events, heartbeats, remote control).
- ``broker/``: take messages off the model queues (atomic fetch, leases, envelope,
  inputs stored beside a message).
- ``models/``: the registry and the runtimes (LiteRT, TensorFlow) that run a batch.
- ``serving/``: decode, validate, batch, predict, store the result (the cache), ack.

Nothing here is imported by ``producers`` or ``tasks``; runtimes import their backend
(LiteRT, TensorFlow) lazily.
"""

import sys as _sys
from pathlib import Path as _Path


def _check_tasks_package() -> None:
    """``tasks`` must be inferq's contract package, not a user's own tasks.py found first
    on ``sys.path`` (``python -m workers`` run from their project's folder). The client's
    copy of this check is ``producers/tasks_check.py``; the worker side may not import
    the client library, so it has its own."""
    import importlib

    expected = _Path(__file__).resolve().parent.parent / "tasks" / "__init__.py"
    try:
        module = _sys.modules.get("tasks") or importlib.import_module("tasks")
    except ImportError:
        return
    found = getattr(module, "__file__", None)
    if found is None or _Path(found).resolve() != expected:
        raise ImportError(
            f"the module 'tasks' was imported from {found or 'a namespace package'}, not inferq's own "
            f"'tasks' package ({expected.parent}): a tasks.py (or tasks/ folder) of yours shadows it. "
            "Rename your module (e.g. to app_tasks.py), or run from another directory."
        )


_check_tasks_package()
