"""``inferq demo``: the whole path on one machine, with a latency report.

Uses the configured Redis when it answers (never flushing it), or starts a private
one; builds the digits example if absent; starts a worker and Flower; submits the
held-out digits to ``digits`` fp32 and int8, then the same again to show cache hits;
prints accuracy, a latency table, throughput and cache hit ratios; stops what it
started. With ``--keep`` what it started outlives it, recorded in
``.run/demo-kept.json`` for ``inferq demo --stop``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ops.demo.keep import KEPT_FILE, Kept, kept_running, print_kept, record_kept, stop_command
from ops.local.processes import die_with_parent, stop_process
from ops.local.redis_server import LocalRedis, free_port, port_free, redis_answers
from ops.stats import latency_table, summarize
from ops.status import wait_for_workers
from producers.client import Client
from tasks.errors import InferqError
from tasks.settings import Settings, redact_url

VARIANTS = ("fp32", "int8")


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


def run_pass(client: Client, x: np.ndarray, variant: str) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    jobs = [client.submit("digits", xi, variant=variant) for xi in x]
    results = client.wait_all(jobs, timeout=300)
    return results, time.perf_counter() - t0


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
        worker = _spawn(["worker", "--models", ",".join(models)], settings, log_files["worker"], keep=keep)
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
            workers = wait_for_workers(client, models, timeout=120)
            print(
                f"worker up: {workers[0]['hostname']}, RSS {workers[0].get('rss_bytes', 0) / 2**20:.0f} MiB"
            )
            _wait_for_flower(settings, password)
            flower_url = f"http://127.0.0.1:{settings.flower_port}"
            print(f"Flower:  {flower_url}  user {settings.flower_user}  password {password}")
            if gateway_url:
                _wait_for_gateway(gateway_url, log_files["gateway"])
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


def report(client: Client, x: np.ndarray, y: np.ndarray) -> None:
    top1: dict[str, np.ndarray] = {}
    for pass_no in (1, 2):
        print(f"\n== pass {pass_no}: {len(x)} held-out digits to each of {', '.join(VARIANTS)} ==")
        for variant in VARIANTS:
            results, wall = run_pass(client, x, variant)
            ok = [r for r in results if not isinstance(r, InferqError)]
            errors = len(results) - len(ok)
            hits = sum(r.cached for r in ok)
            pred = np.array([int(r.outputs["probs"].argmax()) for r in ok])
            top1[variant] = pred
            acc = float((pred == y[: len(pred)]).mean()) if len(pred) == len(y) else float("nan")
            print(
                f"\ndigits:{variant}  accuracy {acc:.4f}  errors {errors}  "
                f"cache hits {hits}/{len(ok)} ({hits / max(1, len(ok)):.0%})  "
                f"throughput {len(results) / wall:.0f} jobs/s ({wall:.2f} s)"
            )
            computed = [r for r in ok if not r.cached]
            if computed:
                print(f"mean batch size {np.mean([r.timing.batch_size for r in computed]):.1f}")
            rows = {}
            if computed:
                rows = {
                    "queue": summarize(r.timing.queue_ms for r in computed),
                    "processing": summarize(r.timing.processing_ms for r in computed),
                    "compute": summarize(r.timing.compute_ms for r in computed),
                    "end-to-end": summarize(r.timing.end_to_end_ms or 0.0 for r in computed),
                }
            cached = [r for r in ok if r.cached]
            if cached:
                rows["cache-hit round trip"] = summarize(r.timing.end_to_end_ms or 0.0 for r in cached)
            print(latency_table(rows))
    agree = float((top1["int8"] == top1["fp32"]).mean())
    print(f"\nint8 top-1 agrees with fp32 on {agree:.2%} of the held-out digits")
    print(
        "notes: one producer thread submits the jobs one by one as fast as it can, so its "
        "submit rate bounds the throughput shown;\n"
        "       processing = receive to result ready, and includes the batch wait (up to the "
        "model's max_wait_ms); queue = enqueue to receive."
    )


def _gateway_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn"))


def _wait_for_gateway(url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise InferqError(f"the gateway at {url} did not become ready within {timeout:g} s; see {log}")


def http_example(url: str, x: np.ndarray, label: int, settings: Settings) -> None:
    """One request through the gateway, as any HTTP client would send it, and its answer."""
    path = "/v2/models/digits/versions/fp32/infer"
    body = {
        "inputs": [{"name": "image", "shape": [1, *x.shape], "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    headers = {"Content-Type": "application/json"}
    if settings.api_key_list:
        headers["Authorization"] = f"Bearer {settings.api_key_list[0]}"
    print(f"\n== one request through the HTTP gateway ({url}) ==")
    shown = json.dumps(body)
    print(f"POST {path}\n  {shown[:110]} ... ({len(x.ravel())} numbers)")
    req = urllib.request.Request(url + path, data=shown.encode(), headers=headers, method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, answer = resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"HTTP {exc.code}: {exc.read()[:300]!r}")
        return
    ms = (time.perf_counter() - t0) * 1e3
    probs = np.asarray(answer["outputs"][0]["data"], np.float32)
    answer["outputs"][0]["data"] = [round(float(p), 4) for p in probs]
    print(f"HTTP {status} in {ms:.1f} ms\n  {json.dumps(answer)}")
    print(f"  predicted digit {int(probs.argmax())} (label {label})")
    print(
        f"  the same from a shell: curl -s {url}{path} -H 'Content-Type: application/json' -d @request.json"
    )


def _flower_get(settings: Settings, password: str, path: str) -> bytes:
    url = f"http://127.0.0.1:{settings.flower_port}{path}"
    token = base64.b64encode(f"{settings.flower_user}:{password}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def _wait_for_flower(settings: Settings, password: str, timeout: float = 60) -> None:
    """Flower learns jobs from live events only: start the workload once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _flower_get(settings, password, "/api/workers")
            time.sleep(1.0)  # its event receiver connects just after the web server
            return
        except OSError:
            time.sleep(0.3)
    print("Flower did not come up; see .run/flower.log")


def _flower_count(settings: Settings, password: str) -> None:
    """Ask Flower's API how many tasks it saw (it learns them from worker events)."""
    try:
        tasks = json.loads(_flower_get(settings, password, "/api/tasks?limit=100000"))
    except OSError as exc:
        print(f"Flower API not reachable ({exc}); see .run/flower.log")
        return
    states = Counter(t.get("state") for t in tasks.values())
    print(f"Flower saw {len(tasks)} tasks: {dict(states)}")
