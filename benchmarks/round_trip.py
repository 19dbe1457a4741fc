"""What one round trip and one thread wake-up cost on this machine: the unit that every
single-job figure is made of.

    .venv/bin/python benchmarks/round_trip.py [--calls 3000]

A single job costs a handful of Redis round trips (the client's claim and send, the
worker's fetch, cancel check, store and ack) and a few wake-ups of sleeping threads
(the doorbell, the batcher, the completer, the client's listener and waiter). Bulk
work pays them per message or per batch instead, so it hardly notices them; single
jobs at low load are made of little else. Machines differ here far more than in
Python speed: a virtual machine whose idle vCPUs halt pays an exit for every
cross-CPU wake-up. This prints, on a private ``redis-server``:

- a ``PING`` over TCP (loopback), and over a Unix socket: CPU of this process and
  wall time per call (redis-py, as inferq uses it);
- an ``EVALSHA`` of a script that returns at once (every inferq script pays this);
- two threads of this process passing a byte back and forth over pipes: CPU (both
  threads) and wall per round (two wake-ups), with no Redis at all.

Read single-job CPU figures (``client_cpu.py --threads 1``) against these.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.system_bench import cpu_name  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402


def per_call(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(µs of this process's CPU, µs of wall time) per call of ``fn``, after 100 untimed."""
    for _ in range(100):
        fn()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.process_time() - c0) / calls * 1e6, (time.perf_counter() - t0) / calls * 1e6


def thread_ping_pong(rounds: int) -> tuple[float, float]:
    """(µs of CPU, µs of wall) per round of two threads handing a byte to each other."""
    to_echo, from_main = os.pipe()
    to_main, from_echo = os.pipe()

    def echo() -> None:
        for _ in range(rounds):
            os.read(to_echo, 1)
            os.write(from_echo, b"x")

    t = threading.Thread(target=echo)
    t.start()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        os.write(from_main, b"x")
        os.read(to_main, 1)
    t.join()
    out = (time.process_time() - c0) / rounds * 1e6, (time.perf_counter() - t0) / rounds * 1e6
    for fd in (to_echo, from_main, to_main, from_echo):
        os.close(fd)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {args.calls} calls each")
    with tempfile.TemporaryDirectory() as tmp:
        sock = str(Path(tmp) / "redis.sock")
        with LocalRedis(extra=["--unixsocket", sock]) as server:
            tcp = redis.Redis.from_url(server.url)
            rows = [("PING over TCP", per_call(tcp.ping, args.calls))]
            noop = tcp.register_script("return 1")
            rows.append(("EVALSHA (returns at once)", per_call(lambda: noop(keys=[], args=[]), args.calls)))
            unix = redis.Redis(unix_socket_path=sock)
            rows.append(("PING over a Unix socket", per_call(unix.ping, args.calls)))
            tcp.close()
            unix.close()
    rows.append(("two threads, one round over pipes", thread_ping_pong(args.calls)))
    print("| what | CPU per call (µs) | wall per call (µs) |")
    print("|---|---|---|")
    for name, (cpu, wall) in rows:
        print(f"| {name} | {cpu:.1f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
