"""Stopping child processes the same way everywhere: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the parent dies, even by SIGKILL, so no
    worker or private Redis outlives the bench, demo or test run that started it.

    Linux only (a no-op elsewhere); it fires when the *thread* that started the child
    exits, so start children from a thread that lives as long as they should.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 30.0) -> int:
    """Ask ``proc`` to stop (a worker then finishes its batch) and wait; kill it if it won't."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
