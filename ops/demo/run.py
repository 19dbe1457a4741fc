"""``inferq demo``: the whole path on one machine, with a latency report.

Uses the configured Redis when it answers (never flushing it), or starts a private
one; builds the digits example if absent; starts a worker, Flower and the gateway,
watching each until it is up (one that exits while starting is reported at once,
with the end of its log); runs the workload (``workload.py``: fresh held-out digits
to ``digits`` fp32 and int8, then the same again to show cache hits); stops what it
started. With ``--keep`` what it started outlives it, recorded in
``.run/demo-kept.json`` for ``inferq demo --stop``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ops.demo.keep import KEPT_FILE, Kept, kept_running, print_kept, record_kept, stop_command
from ops.demo.workload import VARIANTS, http_example, report
from ops.local.processes import die_with_parent, stop_process
from ops.local.redis_server import LocalRedis, free_port, port_free, redis_answers
from ops.local.startup import wait_until_up, workers_serving
from producers.client import Client
from tasks.errors import InferqError
from tasks.settings import Settings, redact_url


def run_dir(settings: Settings) -> Path:
    """The demo's logs and ``--keep``'s record: ``.run`` beside the models folder."""
    return settings.models_dir.parent / ".run"


def _spawn(args: list[str], settings: Settings, log: Path, *, keep: bool) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "wb")  # noqa: SIM115 - lives as long as the child
    env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=fh,
        stderr=subprocess.STDOUT,
        # Kept: its own session, so the terminal's Ctrl-C or hangup after the demo
        # does not reach it. Else it dies with the demo, even a SIGKILLed one.
        preexec_fn=None if keep else die_with_parent,
        start_new_session=keep,
    )


def run_demo(settings: Settings, *, keep: bool = False, use_configured: bool = True) -> int:
    logs = run_dir(settings)
    kept_file = (logs / KEPT_FILE).resolve()
    if keep and not Path("/proc").is_dir():
        raise InferqError("--keep records what it leaves running from /proc, which only Linux has")
    if keep and kept_running(kept_file):
        print(
            f"inferq demo: what an earlier `demo --keep` left still runs ({kept_file}); "
            f"stop it first: {stop_command(kept_file)}",
            file=sys.stderr,
        )
        return 2
    # Everything started goes on this stack and is stopped on the way out: always
    # without --keep, and with it when the demo fails or is interrupted.
    with ExitStack() as started:
        if keep:  # runs last: the record goes once what it lists is stopped
            started.callback(kept_file.unlink, missing_ok=True)
        procs: dict[str, subprocess.Popen[bytes]] = {}
        log_files = {"worker": logs / "worker.log", "flower": logs / "flower.log"}
        if (
            use_configured
            and redis_answers(settings.broker_url, settings=settings)
            and redis_answers(settings.result_backend, settings=settings)
        ):
            print(f"using the configured Redis at {redact_url(settings.broker_url)} (nothing is flushed)")
        else:
            local = LocalRedis(workdir=logs / "redis" if keep else None, detach=keep).start()
            started.callback(local.stop)
            assert local.proc is not None  # start() raises otherwise
            procs["redis"], log_files["redis"] = local.proc, local.workdir / "redis.log"
            why = "did not answer" if use_configured else "is not configured (INFERQ_BROKER_URL)"
            print(
                f"the broker {redact_url(settings.broker_url)} {why}; "
                f"started a private Redis at {local.url} (pid {local.proc.pid})"
            )
            settings = settings.with_(broker_url=local.url, result_backend=local.url)

        if not (settings.models_dir / "digits" / "fp32" / "meta.json").is_file():
            print(f"building the digits example models in {settings.models_dir} ...", flush=True)
            subprocess.run(
                [sys.executable, "-m", "ops.cli", "models", "build-examples", "--only", "digits"],
                env={**os.environ, **settings.env()},
                check=True,
            )
        password = settings.flower_password or base64.urlsafe_b64encode(os.urandom(9)).decode()
        settings = settings.with_(flower_password=password)
        models = [f"digits:{v}" for v in VARIANTS]
        # Named, so that on a configured Redis another worker serving digits is not taken for it.
        hostname = f"inferq-demo-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        worker = _spawn(
            ["worker", "--models", ",".join(models), "--hostname", hostname],
            settings,
            log_files["worker"],
            keep=keep,
        )
        started.callback(stop_process, worker)
        flower = _spawn(["flower"], settings, log_files["flower"], keep=keep)
        started.callback(stop_process, flower)
        procs |= {"worker": worker, "flower": flower}
        print(
            f"starting a worker (TFLite only: digits fp32 + int8; pid {worker.pid}) "
            f"and Flower (pid {flower.pid}) ...",
            flush=True,
        )
        gateway_url = ""
        if _gateway_installed():
            port = settings.gateway_port if port_free(settings.gateway_port) else free_port()
            log_files["gateway"] = logs / "gateway.log"
            gateway = _spawn(["gateway", "--port", str(port)], settings, log_files["gateway"], keep=keep)
            started.callback(stop_process, gateway)
            procs["gateway"] = gateway
            gateway_url = f"http://127.0.0.1:{port}"
            print(f"starting the HTTP gateway on {gateway_url} (pid {gateway.pid}) ...", flush=True)
        else:
            print("the HTTP gateway is not installed (pip install '.[gateway]'); skipping it")
        with Client(settings) as client:
            # Each child is watched while it starts: one that exits is reported at once,
            # with the end of its log, instead of after a start-up timeout.
            wait_until_up(
                worker,
                lambda: bool(workers_serving(client, models, hostname)),
                what="the demo's worker",
                log=log_files["worker"],
                timeout=120,
            )
            up = workers_serving(client, models, hostname)[0]
            print(f"worker up: {up['hostname']}, RSS {up.get('rss_bytes', 0) / 2**20:.0f} MiB")
            _wait_for_flower(settings, password, flower, log_files["flower"])
            flower_url = f"http://127.0.0.1:{settings.flower_port}"
            print(f"Flower:  {flower_url}  user {settings.flower_user}  password {password}")
            if gateway_url:
                _wait_for_gateway(gateway_url, procs["gateway"], log_files["gateway"])
                print(f"gateway: {gateway_url}  (Open Inference Protocol v2; API docs at {gateway_url}/docs)")
            kept: Kept | None = None
            if keep:
                # Recorded once all answer (command lines are final) and before the
                # workload, so `--stop` finds them even if this process is killed now.
                kept = record_kept(kept_file, procs, log_files, settings.broker_url, flower_url, gateway_url)

            data = settings.models_dir / "digits" / "data"
            x = np.load(data / "heldout_x.npy")
            y = np.load(data / "heldout_y.npy")
            report(client, x, y)
            if gateway_url:
                http_example(gateway_url, x[0], int(y[0]), settings)
            _flower_count(settings, password)
        if kept is not None:
            started.pop_all()  # the demo got through: what it started outlives it
            print_kept(
                kept, kept_file, settings.flower_user, password, ",".join(f"digits:{v}" for v in VARIANTS)
            )
    return 0


def _gateway_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn"))


def _answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):
            return True
    except OSError:
        return False


def _wait_for_gateway(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    ready = f"{url}/v2/health/ready"
    wait_until_up(proc, lambda: _answers(ready), what=f"the gateway at {url}", log=log, timeout=timeout)


def _flower_get(settings: Settings, password: str, path: str) -> bytes:
    url = f"http://127.0.0.1:{settings.flower_port}{path}"
    token = base64.b64encode(f"{settings.flower_user}:{password}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def _wait_for_flower(
    settings: Settings, password: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    """Flower learns jobs from live events only: start the workload once it listens."""

    def listens() -> bool:
        try:
            _flower_get(settings, password, "/api/workers")
        except OSError:
            return False
        return True

    wait_until_up(proc, listens, what="Flower", log=log, timeout=timeout)
    time.sleep(1.0)  # its event receiver connects just after the web server


def _flower_count(settings: Settings, password: str) -> None:
    """Ask Flower's API how many tasks it saw (it learns them from worker events)."""
    try:
        tasks = json.loads(_flower_get(settings, password, "/api/tasks?limit=100000"))
    except OSError as exc:
        print(f"Flower API not reachable ({exc}); see .run/flower.log")
        return
    states = Counter(t.get("state") for t in tasks.values())
    print(f"Flower saw {len(tasks)} tasks: {dict(states)}")
