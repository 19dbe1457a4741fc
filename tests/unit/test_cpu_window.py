"""The benchmark's machine clock and its perf report summary (benchmarks/cpu_window.py)."""

from __future__ import annotations

import os
import time

import pytest

from benchmarks.cpu_window import MachineClock, machine_ticks, summarize, threads_of

REPORT = """\
# Samples: 32K of event 'cpu-clock:ppp'
#
# Overhead      Pid:Command      Shared Object
# ........  .................  ...................
#
    36.00%        0:swapper      [kernel.kallsyms]
    20.00%     8016:python       libpywrap_litert_common.so
     8.00%     8004:python       libpython3.11.so.1.0
     8.00%     8007:redis-server  redis-check-rdb
     4.00%     8015:python       libpython3.11.so.1.0
     2.00%     8004:python       [kernel.kallsyms]
     1.00%     9999:nats-server  nats-server
     0.50%     8021:python       libpython3.11.so.1.0
"""


def test_perf_rows_are_summed_per_role_and_library_as_shares_of_the_busy_samples() -> None:
    roles = {8004: "client", 8015: "worker", 8016: "worker", 8021: "worker", 8007: "redis"}
    rows = summarize(REPORT, roles)
    by_key = {(role, dso): share for share, role, dso in rows}
    busy = 20.0 + 8.0 + 8.0 + 4.0 + 2.0 + 1.0 + 0.5  # every row but the idle task's
    assert by_key[("worker", "libpython3.11.so.1.0")] == pytest.approx(100 * 4.5 / busy)  # two threads summed
    assert by_key[("client", "kernel.kallsyms")] == pytest.approx(100 * 2.0 / busy)  # brackets dropped
    assert by_key[("other", "nats-server")] == pytest.approx(100 * 1.0 / busy)  # a neighbour
    assert all((role != "idle" and dso != "kernel.kallsyms") or role != "other" for _, role, dso in rows)
    assert rows[0][1:] == ("worker", "libpywrap_litert_common.so")  # largest first
    assert abs(sum(share for share, _, _ in rows) - 100.0) < 1e-9  # idle left out


def test_the_machine_clock_sees_a_busy_loop_as_busy() -> None:
    busy0, total0 = machine_ticks()
    assert 0 <= busy0 <= total0
    clock = MachineClock()
    clock.start()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    clock.stop()
    assert clock.busy_s >= 0.2  # this process alone spun 0.3 s of one core
    assert 0.0 < clock.busy_share <= 1.0


def test_threads_of_lists_this_process_threads_and_skips_a_gone_process() -> None:
    assert os.getpid() in threads_of({os.getpid()})
    assert threads_of({2**22 + 12345}) == set()
