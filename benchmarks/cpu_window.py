"""Where a benchmark window's CPU went on the whole machine (issue 18's bulk figures).

On a two-core machine the client, the worker and Redis share the cores with each other
and with the neighbours. Two questions decide what a throughput figure means:

- was the machine busy the whole window (``MachineClock``)? If it was, the rate is set
  by CPU per input alone, and waiting less changes nothing;
- what did each process, and each library in it, spend (``PerfWindow``: ``perf record
  -a`` over the window, reported per role and shared object)? The worker's model time
  as stamped on results is wall time, and counts the model's thread while it was
  descheduled; ``perf`` counts what the model's code really ran.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass
class MachineClock:
    """The machine's busy share and busy core-seconds between ``start`` and ``stop``."""

    busy_s: float = 0.0
    busy_share: float = 0.0
    _at: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._at = machine_ticks()

    def stop(self) -> None:
        busy, total = machine_ticks()
        db, dt = busy - self._at[0], total - self._at[1]
        self.busy_s = db / TICKS
        self.busy_share = db / dt if dt else 0.0


def threads_of(pids: set[int]) -> set[int]:
    """Every thread id of ``pids`` (``perf`` reports threads, not processes)."""
    out: set[int] = set()
    for pid in pids:
        try:
            out.update(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return out


class PerfWindow:
    """``perf record -a`` from ``start`` to ``stop`` into ``path``; ``report`` then sums its
    samples per role (threads named by the caller) and shared object."""

    def __init__(self, path: Path, frequency: int = 999) -> None:
        if shutil.which("perf") is None:
            raise SystemExit("--perf needs the perf tool (Debian: apt-get install linux-perf)")
        self.path = path
        self.frequency = frequency
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["perf", "record", "-a", "-F", str(self.frequency), "-o", str(self.path), "--", "sleep", "3600"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # perf opens its buffers before the window begins
        if self._proc.poll() is not None:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise SystemExit(f"perf record exited at once ({self._proc.returncode}): {err.strip()[:500]}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(timeout=60)

    def report(self, roles: dict[int, str], top: int = 12) -> list[tuple[float, str, str]]:
        """The ``top`` (share of the busy samples, role, shared object) rows; threads not
        in ``roles`` are ``other``. Idle is left out: the window opens before the run
        (perf needs a moment to start), and ``MachineClock`` tells the run's idle share."""
        text = subprocess.run(
            ["perf", "report", "-i", str(self.path), "--sort", "pid,dso", "--stdio"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return summarize(text, roles)[:top]


def summarize(report: str, roles: dict[int, str]) -> list[tuple[float, str, str]]:
    """Rows of ``perf report --sort pid,dso --stdio`` summed per (role, shared object), as
    percentages of the samples not idle (thread 0, the kernel's idle task), largest first."""
    sums: dict[tuple[str, str], float] = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 3 or line.lstrip().startswith("#") or not parts[0].endswith("%"):
            continue
        tid_text = parts[1].split(":", 1)[0]
        if not tid_text.isdigit():
            continue
        tid = int(tid_text)
        if tid == 0:
            continue
        key = (roles.get(tid, "other"), " ".join(parts[2:]).strip("[]"))
        sums[key] = sums.get(key, 0.0) + float(parts[0].rstrip("%"))
    busy = sum(sums.values()) or 1.0
    return sorted(((100 * share / busy, role, dso) for (role, dso), share in sums.items()), reverse=True)
