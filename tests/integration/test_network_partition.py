"""Two hosts on one machine: Redis here, a worker in its own network namespace, a cable between.

The worker's namespace has a loopback and one end of a veth pair; the other end is in
this (the test's) namespace, where Redis listens on it. The addresses are the test's
own (a /30 of 10.231/16), with no route anywhere else. Pulling the "cable" (setting
the link down) for 10 s under load must cost time and nothing else: the worker
reconnects by itself and every job submitted before, during and after ends with a
result.

Needs root (``ip netns``). Outside CI a machine without it skips the test; under
``CI=true`` that is a failure, so the test cannot silently stop running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ops.local.redis_server import LocalRedis
from producers.client import Client
from producers.job import Job
from tasks.settings import Settings
from tasks.wire import Result
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.integration

DOWN_S = 10.0


@dataclass(frozen=True)
class Link:
    namespace: str
    host_side: str  # in the test's namespace, where Redis is
    host_ip: str
    worker_ip: str

    def set(self, up: bool) -> None:
        ip("link", "set", self.host_side, "up" if up else "down")


def ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture()
def link() -> Iterator[Link]:
    n = os.getpid() % 10_000
    ns, host, peer = f"inferq-w{n}", f"iqh{n}", f"iqw{n}"
    octet = 1 + os.getpid() % 250
    lk = Link(ns, host, f"10.231.{octet}.1", f"10.231.{octet}.2")
    try:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise PermissionError("needs root and iproute2's ip")
        ip("netns", "add", ns)
        ip("link", "add", host, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("addr", "add", f"{lk.host_ip}/30", "dev", host)
        ip("link", "set", host, "up")
        ip("addr", "add", f"{lk.worker_ip}/30", "dev", peer, netns=ns)
        ip("link", "set", peer, "up", netns=ns)
        ip("link", "set", "lo", "up", netns=ns)
    except (PermissionError, subprocess.CalledProcessError) as exc:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        detail = getattr(exc, "stderr", None) or exc
        if os.environ.get("CI"):
            pytest.fail(f"cannot build the two-host network: {detail}")
        pytest.skip(f"cannot build the two-host network here: {detail}")
    yield lk
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes the veth pair with it
    subprocess.run(["ip", "link", "del", host], capture_output=True)


def test_a_worker_on_another_host_rides_out_a_10_s_link_outage_under_load(
    link: Link, models_dir: Path, tmp_path: Path
) -> None:
    server = LocalRedis(extra=["--bind", "127.0.0.1", link.host_ip, "--protected-mode", "no"]).start()
    worker_settings = Settings(
        broker_url=f"redis://{link.host_ip}:{server.port}/0", models_dir=models_dir, metrics_port=0
    )
    # The worker's 127.0.0.1 is its own namespace's loopback, and it has no route out
    # but the link: Redis is reachable only across it.
    with pytest.raises(subprocess.CalledProcessError):
        ip("route", "get", "192.0.2.1", netns=link.namespace)
    w = WorkerProcess(
        worker_settings,
        ["digits:fp32"],
        tmp_path / "worker.log",
        prefix=["ip", "netns", "exec", link.namespace],
    )
    x = np.load(models_dir / "digits" / "data" / "heldout_x.npy")
    try:
        with Client(Settings(broker_url=server.url, models_dir=models_dir)) as client:
            w.wait_ready(client)
            jobs: list[tuple[float, Job]] = []
            stop = threading.Event()

            def produce() -> None:  # about 50 jobs/s, before, during and after the outage
                i = 0
                while not stop.is_set():
                    xi = (x[i % len(x)] + np.float32(time.time() % 1e3) * 1e-4).astype(np.float32)
                    jobs.append((time.time(), client.submit("digits", xi, variant="fp32", no_cache=True)))
                    i += 1
                    time.sleep(0.02)

            producer = threading.Thread(target=produce)
            producer.start()
            time.sleep(2.0)
            link.set(up=False)
            down_at = time.time()
            time.sleep(DOWN_S)
            link.set(up=True)
            up_at = time.time()
            time.sleep(3.0)
            stop.set()
            producer.join()
            results = client.wait_all([j for _, j in jobs], timeout=120)
            assert w.alive, w.log_text()[-3000:]
    finally:
        w.stop()
        server.stop()
    failed = [r for r in results if not isinstance(r, Result)]
    assert not failed, f"{len(failed)} of {len(results)} jobs failed, e.g. {failed[:3]}"
    during = [(t, r) for (t, _), r in zip(jobs, results, strict=True) if down_at <= t < up_at]
    assert len(during) > 100, "the producer did not keep submitting while the link was down"
    # Jobs sent during the outage were done only after the link came back.
    finished = [r.timing.finished_at for _, r in during if isinstance(r, Result)]
    assert min(finished) >= up_at - 0.5
    print(
        f"\n{len(results)} jobs, {len(during)} sent during the {DOWN_S:.0f} s outage; work resumed "
        f"{min(finished) - up_at:.2f} s after the link came back, the backlog was done "
        f"{max(finished) - up_at:.2f} s after"
    )
