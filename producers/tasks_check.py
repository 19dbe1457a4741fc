"""Is ``tasks`` inferq's contract package, or a user's own ``tasks.py`` that shadows it?

inferq's shared contract is the top-level package ``tasks`` (the layout names it). A
Celery project often has a ``tasks.py`` of its own beside its app; run from that folder,
Python finds it first (the script's folder and the current directory come first on
``sys.path``) and every import of inferq fails with ``cannot import name 'constants'
from 'tasks'``, which names neither the cause nor the cure. This check runs before
anything of inferq imports ``tasks`` and says both. It imports nothing of inferq's.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

#: Where inferq's own ``tasks`` package lies: beside this package, in the same install.
EXPECTED = Path(__file__).resolve().parent.parent / "tasks" / "__init__.py"


def check_tasks_package() -> None:
    """Raise ``ImportError`` saying what happened when ``tasks`` is not inferq's package."""
    module = sys.modules.get("tasks")
    if module is None:
        try:
            module = importlib.import_module("tasks")
        except ImportError:
            return  # nothing shadows it; the real import will say what is missing
    found = getattr(module, "__file__", None)
    if found is not None and Path(found).resolve() == EXPECTED:
        return
    where = found or "a namespace package (a folder named tasks without __init__.py)"
    raise ImportError(
        f"the module 'tasks' was imported from {where}, not inferq's own 'tasks' package "
        f"({EXPECTED.parent}): a tasks.py (or tasks/ folder) of yours shadows it, since Python "
        "looks in the script's folder and the current directory first. Rename your module "
        "(e.g. to app_tasks.py), or run from another directory."
    )
