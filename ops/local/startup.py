"""Waiting for a child process to come up while watching that it does not die first.

A worker that cannot start (an unknown model, a broken model file, a missing extra)
exits within a second or two. Waiting out a two-minute start-up timeout before saying
"did not start; see a log" hides the cause for no reason: the commands that start
processes (``bench --compare``, ``tune``, ``demo``) watch the child while they wait and,
the moment it exits, report the child's own last words from its log.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.status import collect
from producers.client import Client
from tasks.errors import ConfigError, Timeout

#: How much of a dead child's log its error message quotes: enough for a traceback's
#: last frames and the error itself, little enough to read in a terminal.
LOG_TAIL_LINES = 12
#: How often readiness and the child's life are checked.
POLL_S = 0.2


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-blank ``lines`` of ``log``, indented, or a note that it is empty or absent."""
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"  (its log {log} cannot be read: {exc.strerror})"
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  {line}" for line in kept) if kept else "  (its log is empty)"


def wait_until_up(
    proc: subprocess.Popen[Any],
    ready: Callable[[], bool],
    *,
    what: str,
    log: Path,
    timeout: float,
    stop: threading.Event | None = None,
) -> None:
    """Return once ``ready()``; raise ``ConfigError`` the moment ``proc`` exits instead.

    The error quotes the end of ``log`` (where the child's own error is) and names it.
    ``Timeout`` when neither happens within ``timeout`` seconds; ``KeyboardInterrupt``
    when ``stop`` is set meanwhile (a Ctrl-C caught by a handler that only sets it).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ConfigError(
                f"{what} exited with status {proc.returncode} while starting; "
                f"the end of its log {log}:\n{log_tail(log)}"
            )
        if ready():
            return
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            raise Timeout(
                f"{what} did not come up within {timeout:g} s (it still runs); "
                f"the end of its log {log}:\n{log_tail(log)}"
            )
        time.sleep(POLL_S)


def workers_serving(client: Client, keys: list[str], hostname: str | None = None) -> list[dict[str, Any]]:
    """The live workers that serve all of ``keys`` (``model:variant``), or only the one named ``hostname``."""
    return [
        w
        for w in collect(client)["workers"]
        if set(keys) <= set(w["models"]) and (hostname is None or w["hostname"] == hostname)
    ]
