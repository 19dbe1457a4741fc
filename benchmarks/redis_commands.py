"""Redis commands per single job, split by who sends them, on a private Redis.

    .venv/bin/python benchmarks/redis_commands.py [--jobs 200] [--models-dir /tmp/iq-models]
    .venv/bin/python benchmarks/redis_commands.py --idle 4 [--seconds 20]

Starts a private ``redis-server`` and inferq worker process(es), then counts every
command Redis runs in two ways at once:

- ``INFO commandstats`` deltas: the server's own count, commands run inside Lua
  scripts included (the bench's own ``INFO`` calls are left out);
- ``MONITOR`` on a connection of its own: each command with the connection that sent
  it, or ``lua`` for one a script ran. A script's commands are charged to the
  connection whose ``EVAL``/``EVALSHA`` ran them (a probe script at start tells
  whether Redis lists them before or after the call).

A connection's role (``client``: this process, where the ``Client`` runs; ``worker``:
a worker process or its children) is read from ``/proc``: each process's sockets and
the local port each is bound to (Linux only; otherwise ``other``).

Jobs mode runs ``--jobs`` single jobs one at a time (submit, then wait), each input
new (no cache hits), after ``--warmup`` jobs not counted. ``--idle N`` starts N
workers, lets them sit ``--seconds`` with nothing to do, and reports commands per
second per idle worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.local.processes import die_with_parent, stop_process  # noqa: E402
from ops.local.redis_server import LocalRedis  # noqa: E402
from ops.status import wait_for_workers  # noqa: E402
from producers.client import Client  # noqa: E402
from tasks.settings import Settings  # noqa: E402

SCRIPT_CALLS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"}
#: Commands the bench itself sends on its own connections (never counted).
BENCH_NAME = "iq-bench"


def local_ports(pids: set[int], redis_port: int) -> set[int]:
    """Local TCP ports of ``pids``' connections to ``redis_port`` on 127.0.0.1 (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) == redis_port:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def process_tree(root: int) -> set[int]:
    """``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(stat[1])
            except (OSError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


class Roles:
    """Which process (client or worker) a connection's local port belongs to."""

    def __init__(self, redis_port: int, worker_pids: list[int]) -> None:
        self.redis_port = redis_port
        self.worker_pids = worker_pids
        self.ports: dict[int, str] = {}
        self.refresh()

    def refresh(self) -> None:
        for port in local_ports({os.getpid()}, self.redis_port):
            self.ports.setdefault(port, "client")
        workers: set[int] = set()
        for pid in self.worker_pids:
            workers |= process_tree(pid)
        for port in local_ports(workers, self.redis_port):
            self.ports.setdefault(port, "worker")

    def of(self, port: int) -> str:
        if port not in self.ports:
            self.refresh()
        return self.ports.get(port, "other")


class Monitor:
    """Counts commands from ``MONITOR`` by (role, top-level or in-script, command)."""

    def __init__(self, url: str, roles: Roles, skip_ports: set[int]) -> None:
        self.roles = roles
        self.skip_ports = skip_ports
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.counting = False
        self._conn = redis.Redis.from_url(url)
        self._monitor = self._conn.monitor()
        self._monitor.__enter__()
        self._lua_after_call = self._probe(url)
        self._pending_lua: list[str] = []  # in-script commands not yet charged to a call
        self._last_script_role = "other"
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _probe(self, url: str) -> bool:
        """Whether Redis lists a script's commands after its EVAL line (else before)."""
        probe = redis.Redis.from_url(url)
        script = (Path(__file__).with_name("monitor_probe.lua")).read_text(encoding="utf-8")
        probe.eval(script, 1, "iq-bench-probe")  # type: ignore[no-untyped-call]
        probe.close()
        order: list[bool] = []
        while len(order) < 2:
            ev = self._monitor.next_command()
            if "iq-bench-probe" in ev["command"]:
                order.append(ev["client_type"] == "lua")
        return order == [False, True]

    def _run(self) -> None:
        while not self._stop:
            try:
                ev = self._monitor.next_command()
            except (redis.RedisError, OSError, ValueError, AttributeError):
                # AttributeError: redis-py 8 reading a MONITOR connection that close() released
                return
            if self.counting:
                self._count(ev)

    def _count(self, ev: dict[str, Any]) -> None:
        name = ev["command"].split(" ", 1)[0].upper()
        if ev["client_type"] == "lua":
            if self._lua_after_call:
                self.counts[(self._last_script_role, "in-script", name)] += 1
            else:
                self._pending_lua.append(name)
            return
        port = int(ev.get("client_port") or 0)
        if port in self.skip_ports:
            return
        role = self.roles.of(port)
        self.counts[(role, "top-level", name)] += 1
        if name in SCRIPT_CALLS:
            self._last_script_role = role
            for lua in self._pending_lua:
                self.counts[(role, "in-script", lua)] += 1
            self._pending_lua = []

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(redis.RedisError, OSError):
            self._monitor.__exit__(None, None, None)
        self._conn.close()


def commandstats(r: redis.Redis[Any]) -> Counter[str]:
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()})


def spawn_worker(settings: Settings, model: str, n: int, logdir: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ops.cli", "worker", "--models", model, "--metrics-port", "0"]
    cmd += ["--hostname", f"cmdbench{n}-{os.getpid()}@localhost"]
    return subprocess.Popen(
        cmd,
        env={**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"},
        stdout=(logdir / f"worker{n}.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=die_with_parent,
    )


def table(counts: Counter[tuple[str, str, str]], per: float, unit: str) -> list[str]:
    """Markdown rows: per role, top-level and in-script totals, then the commands."""
    lines = [
        f"| role | top-level {unit} | in-script {unit} | commands (top-level; in-script) |",
        "|---|---|---|---|",
    ]
    for role in sorted({k[0] for k in counts}):
        parts = []
        for kind in ("top-level", "in-script"):
            mine = {k[2]: v for k, v in counts.items() if k[0] == role and k[1] == kind}
            parts.append(
                (
                    sum(mine.values()),
                    ", ".join(f"{c} {v / per:.2f}" for c, v in sorted(mine.items(), key=lambda kv: -kv[1])),
                )
            )
        lines.append(
            f"| {role} | {parts[0][0] / per:.2f} | {parts[1][0] / per:.2f} | {parts[0][1]}; {parts[1][1] or '-'} |"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--idle", type=int, default=0, metavar="N", help="N idle workers instead of jobs")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the idle workers sit")
    ap.add_argument("--model", default="digits:fp32")
    ap.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("INFERQ_MODELS_DIR", ROOT / "models"))
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logdir = ROOT / ".run" / "redis_commands"
    logdir.mkdir(parents=True, exist_ok=True)
    model, variant = args.model.split(":")
    out: dict[str, Any] = {"mode": "idle" if args.idle else "jobs"}
    with LocalRedis() as server:
        settings = Settings(broker_url=server.url, models_dir=args.models_dir, log_level="WARNING")
        workers = [spawn_worker(settings, args.model, n, logdir) for n in range(max(1, args.idle))]
        stats = redis.Redis.from_url(server.url, client_name=BENCH_NAME)
        try:
            with Client(settings) as c:
                wait_for_workers(c, [args.model], timeout=120, count=len(workers))
                info = c.model_info(model, variant)
                rng = np.random.default_rng(int(time.time()))
                shapes = {s.name: tuple(d or 1 for d in s.shape) for s in info.inputs}

                def one() -> None:
                    x = {k: rng.uniform(0, 1, shape).astype(np.float32) for k, shape in shapes.items()}
                    c.submit(model, x, variant=variant).wait(timeout=30)

                for _ in range(args.warmup if not args.idle else 0):
                    one()
                if args.idle:
                    c.close()
                    time.sleep(5)  # start-up traffic settles
                roles = Roles(server.port, [w.pid for w in workers])
                skip = {int(stats.client_info()["addr"].rsplit(":", 1)[1])}
                mon = Monitor(server.url, roles, skip)
                before = commandstats(stats)
                mon.counting = True
                t0 = time.perf_counter()
                if args.idle:
                    time.sleep(args.seconds)
                else:
                    for _ in range(args.jobs):
                        one()
                    time.sleep(0.3)  # the last job's ack follows its result
                took = time.perf_counter() - t0
                mon.counting = False
                after = commandstats(stats)
                mon.close()
        finally:
            for w in workers:
                stop_process(w, grace_s=10)
            stats.close()
    delta = after - before
    delta.pop("info", None)  # the bench's own
    delta.pop("monitor", None)
    if args.idle:
        per, unit = took * len(workers), "/s per worker"
        out |= {"workers": len(workers), "seconds": took}
    else:
        per, unit = float(args.jobs), "per job"
        out |= {"jobs": args.jobs, "seconds": took}
    out["commandstats"] = {k: v / per for k, v in delta.most_common()}
    out["commandstats_total"] = sum(delta.values()) / per
    out["monitor"] = {"/".join(k): v / per for k, v in mon.counts.most_common()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    what = (
        f"{len(workers)} idle worker(s), {took:.1f} s"
        if args.idle
        else f"{args.jobs} single jobs one at a time, {took:.1f} s"
    )
    print(f"# {args.model}; {what}; {os.cpu_count()} cores")
    print(
        f"INFO commandstats: {out['commandstats_total']:.2f} commands {unit} (in-script included): "
        + ", ".join(f"{k} {v:.2f}" for k, v in out["commandstats"].items())
    )
    print(f"MONITOR: {sum(mon.counts.values()) / per:.2f} commands {unit}")
    print("\n".join(table(mon.counts, per, unit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
