"""Stopping child processes the same way everywhere: SIGTERM, a grace period, then SIGKILL.

Also processes that outlive the command that started them (``inferq demo --keep``): a
later command has no ``Popen`` to wait on, only a PID, which the kernel reuses; a
``ProcessRecord`` pins down which process a PID meant, so nothing else gets signalled.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
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


@dataclass(frozen=True)
class ProcessRecord:
    """A process as ``/proc`` shows it: PID, start time (clock ticks after boot), command line.

    PID and start time together name one process for the life of the machine; the
    command line (read once the process is up: ``redis-server`` rewrites its own) is
    checked too, so a record only ever matches the process it was made from. Linux only.
    """

    pid: int
    start_ticks: int
    cmdline: tuple[str, ...]

    @classmethod
    def read(cls, pid: int) -> ProcessRecord | None:
        """The running process ``pid`` now, or ``None`` when there is none (a zombie is none)."""
        proc = Path("/proc") / str(pid)
        try:
            # The command name in parentheses may hold spaces and ")": split after the last one.
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            raw = (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            return None
        if fields[0] in ("Z", "X"):
            return None
        cmdline = tuple(raw.rstrip(b"\0").decode(errors="replace").split("\0"))
        return cls(pid=pid, start_ticks=int(fields[19]), cmdline=cmdline)

    def is_running(self) -> bool:
        """Whether this very process still runs (not merely some process with its PID)."""
        return ProcessRecord.read(self.pid) == self

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "cmdline": list(self.cmdline)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ProcessRecord:
        return cls(pid=int(doc["pid"]), start_ticks=int(doc["start_ticks"]), cmdline=tuple(doc["cmdline"]))


class StopOutcome(StrEnum):
    """What ``stop_recorded`` found and did."""

    STOPPED = "stopped"
    #: It had already exited.
    GONE = "gone"
    #: Its PID now belongs to another process, which was left alone.
    OTHER = "other"
    #: Still running after SIGKILL (stuck in the kernel).
    STUCK = "stuck"


def stop_recorded(record: ProcessRecord, grace_s: float = 30.0) -> StopOutcome:
    """SIGTERM the process ``record`` describes, wait ``grace_s``, then SIGKILL it.

    Signals go through a pidfd opened *before* the record is checked, so a PID reused
    between the check and the signal cannot make us hit another process.
    """
    try:
        fd: int | None = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return StopOutcome.GONE
    except OSError:  # no pidfd (kernel < 5.3, or a seccomp filter): check, then kill by PID
        fd = None
    try:
        current = ProcessRecord.read(record.pid)
        if current is None:
            return StopOutcome.GONE
        if current != record:
            return StopOutcome.OTHER
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                if fd is None:
                    os.kill(record.pid, sig)
                else:
                    signal.pidfd_send_signal(fd, sig)
            if _wait_exit(record, fd, wait_s):
                return StopOutcome.STOPPED
        return StopOutcome.STUCK
    finally:
        if fd is not None:
            os.close(fd)


def _wait_exit(record: ProcessRecord, fd: int | None, timeout: float) -> bool:
    """Whether the process exits within ``timeout`` (a pidfd turns readable when it does)."""
    if fd is not None:
        return bool(select.select([fd], [], [], timeout)[0])
    deadline = time.monotonic() + timeout
    while record.is_running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
