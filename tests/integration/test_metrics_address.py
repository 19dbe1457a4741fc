"""Where a worker serves ``/metrics``: its own loopback by default, every interface when
``INFERQ_METRICS_ADDRESS`` says so (docker-compose, so Prometheus in another container
can scrape it). Read from the kernel's table of listening sockets."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from ops.local.redis_server import free_port
from tasks.settings import Settings
from tests.conftest import on_db, started_worker

pytestmark = pytest.mark.integration


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses something listens on at ``port`` (/proc/net/tcp, state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, _, hexport = local.partition(":")
        if state == "0A" and int(hexport, 16) == port:
            found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@pytest.mark.parametrize(("address", "expected"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_worker_metrics_bind_where_the_setting_says(
    settings: Settings, tmp_path: Path, address: str | None, expected: str
) -> None:
    port = free_port()
    s = on_db(settings, 12).with_(metrics_port=port, metrics_address=address)
    w = started_worker(s, ["digits:fp32"], tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 10
        while not listening_on(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listening_on(port) == {expected}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"inferq_jobs" in resp.read()
    finally:
        w.stop()
