"""How many CPUs this worker may use: the ``cores`` that ``--concurrency auto`` plans for.

``sched_getaffinity`` (a ``taskset`` or a container's ``--cpuset-cpus``), capped by a
cgroup CPU quota (a container's ``--cpus``, which affinity does not show). Apart from
``auto_plan.py`` because it reads the machine (``/proc`` and ``/sys/fs/cgroup``) while
the plan is a pure function of what it is given. ``inferq worker`` and ``inferq tune``
ask it once, then hand the figure to the calibrating child (``calibrate.py``) and to
``choose_plan``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cgroup_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), proc_self: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs this process's cgroup may use (quota / period), or ``None`` without a quota.

    cgroup v2 (``cpu.max``: ``max 100000`` or ``150000 100000``) and v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, -1: none), in the process's own
    cgroup and, as containers usually see it, at the root.
    """
    own: dict[str, str] = {}
    try:
        for line in proc_self.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path.lstrip("/")
    except (OSError, ValueError):
        pass
    for folder in _candidates(root, own.get("")):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else int(quota) / int(period)
    for folder in _candidates(root / "cpu", own.get("cpu")) + _candidates(
        root / "cpu,cpuacct", own.get("cpu")
    ):
        try:
            quota_us = int((folder / "cpu.cfs_quota_us").read_text())
            period_us = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def _candidates(base: Path, own: str | None) -> list[Path]:
    return ([base / own] if own else []) + [base]


def available_cores(
    affinity: Callable[[], int] | None = None, quota: Callable[[], float | None] = cgroup_cpu_quota
) -> float:
    """The CPUs this process may run on (``sched_getaffinity``), capped by a cgroup quota."""
    try:
        n = float(affinity() if affinity else len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        n = float(os.cpu_count() or 1)
    q = quota()
    return max(1.0, min(n, q)) if q is not None else max(1.0, n)
