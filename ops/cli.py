"""The ``inferq`` command line: the parser, one-line errors, and which module runs a command.

Each command lives in its own module (``ops/jobs_cmd.py`` for submit and result,
``ops/status.py``, ``ops/bench/``, ``ops/demo/``...; ``worker`` and ``models`` in
``workers.boot.cli``), imported only when that command runs, so that ``inferq submit``
never pays for TensorFlow, LiteRT, Flower or matplotlib.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

try:  # before anything imports ``tasks``: a user's tasks.py must not shadow it unseen
    from producers.tasks_check import check_tasks_package

    check_tasks_package()
except ImportError as _shadowed:
    print(f"inferq: ImportError: {_shadowed}", file=sys.stderr)
    sys.exit(2)

import redis

from ops.bench.parser import add_bench_parsers
from ops.gateway_cmd import add_gateway_arguments
from ops.models_cmd import add_model_commands
from ops.optimize_cmd import add_optimize_parsers
from producers.bounded import translate
from tasks import constants as C
from tasks.errors import InferqError
from tasks.settings import Settings, redact_url
from workers.boot.cli import add_worker_arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferq", description="Queue-based ML inference on Celery + Redis.")
    sub = p.add_subparsers(dest="cmd", required=True)

    add_worker_arguments(sub.add_parser("worker", help="run a worker serving some models"))

    m = sub.add_parser("models", help="build, add and list models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    b = msub.add_parser("build-examples", help="build digits and mobilenet_v2 locally (needs the tf extra)")
    b.add_argument("--only", help="comma list: digits, mobilenet_v2")
    b.add_argument("--force", action="store_true", help="rebuild even if present")
    a = msub.add_parser("add", help="register a .tflite file or SavedModel folder")
    a.add_argument("name")
    a.add_argument("path")
    a.add_argument("--variant")
    a.add_argument("--version")
    a.add_argument("--force", action="store_true", help="replace an existing MODEL:VARIANT")
    ls = msub.add_parser("list", help="list models and variants")
    ls.add_argument("--json", action="store_true")
    add_optimize_parsers(msub)
    add_model_commands(msub)

    s = sub.add_parser("submit", help="submit one input to MODEL[:VARIANT]")
    s.add_argument("model", metavar="MODEL[:VARIANT]")
    s.add_argument(
        "--input",
        required=True,
        type=Path,
        help=".npy, .json, .png or .jpg; an .npy with a leading axis of inputs is sent in bulk",
    )
    s.add_argument("--wait", action="store_true", help="wait for the result and print it")
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-cache", action="store_true", help="compute even if a result is cached")
    s.add_argument(
        "--priority",
        choices=sorted(C.PRIORITIES),
        default=C.DEFAULT_PRIORITY,
        help="queued high jobs go first",
    )
    s.add_argument("--chunk-size", type=int, default=64, help="inputs per message for a many-input .npy")

    r = sub.add_parser(
        "result",
        help="show a job's result, or its status while queued or running",
        description="Exit status: 0 with the result, or with the status of a job still queued or "
        "running; 2 for an unknown id (never sent, or its result expired), or a job that ended "
        "without a result (its error, on one line).",
    )
    r.add_argument("job_id")
    r.add_argument("--wait", action="store_true")
    r.add_argument("--timeout", type=float, default=30.0)
    r.add_argument("--json", action="store_true")

    st = sub.add_parser("status", help="workers online, models, queue depths")
    st.add_argument("--json", action="store_true")

    f = sub.add_parser("flower", help="run Flower for this app on 127.0.0.1 with basic auth")
    f.add_argument("--port", type=int)

    add_bench_parsers(sub)

    add_gateway_arguments(sub.add_parser("gateway", help="the HTTP gateway (Open Inference Protocol, jobs)"))

    d = sub.add_parser("demo", help="local Redis + worker + Flower, a digits workload, a latency report")
    keep_or_stop = d.add_mutually_exclusive_group()
    keep_or_stop.add_argument(
        "--keep",
        action="store_true",
        help="leave the Redis it started, the worker and Flower running after the report "
        "(it prints how to reach and stop them)",
    )
    keep_or_stop.add_argument(
        "--stop",
        nargs="?",
        const="",
        metavar="FILE",
        help="stop what `demo --keep` left running, as recorded in FILE "
        "(default: .run/demo-kept.json beside the models folder)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error inferq expects ends as one line, ``inferq: <Kind>: ...``
    on stderr, with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
        # Flushed here, so that a reader gone away (``| head``) is met inside this handler,
        # not at interpreter exit, where Python would print a warning about it.
        sys.stdout.flush()
    except BrokenPipeError:
        # The standard way (Python's signal docs): stdout's reader is gone, so stop quietly,
        # and point stdout at /dev/null, since Python flushes it once more at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for name in ("threads", "concurrency"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    settings: Settings | None = None
    try:
        settings = Settings.from_env(**overrides)
        return _dispatch(args, settings)
    except InferqError as exc:
        return fail(type(exc).__name__, str(exc))
    except redis.RedisError as exc:  # a refused password included; URLs shown without it
        where = redact_url(settings.broker_url) if settings is not None else "?"
        err = translate(exc, f"inferq {args.cmd}", f"Redis at {where}")
        return fail(type(err).__name__, str(err))
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise  # one of our own modules: a bug, to be seen whole
        return fail(
            "ModuleNotFoundError",
            f"inferq {args.cmd} needs {exc.name}, which is not installed: pip install 'inferq[{extra}]'",
        )


def fail(kind: str, message: str) -> int:
    """Say an expected error in one line (``inferq: <Kind>: <message>``); exit status 2."""
    print(f"inferq: {kind}: {message}", file=sys.stderr)
    return 2


#: Optional packages some commands import, and the extra that installs each.
EXTRAS = {
    "tqdm": "cli",
    "PIL": "cli",
    "matplotlib": "bench",
    "flower": "flower",
    "tornado": "flower",
    "humanize": "flower",
    "ai_edge_litert": "worker",
    "prometheus_client": "worker",
    "tensorflow": "tf",
    "sklearn": "tf",
    "litert_quantizer": "tf",
    "fastapi": "gateway",
    "uvicorn": "gateway",
}


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.cmd == "worker":
        from workers.boot.cli import cmd_worker

        return cmd_worker(args, settings)
    if args.cmd == "models" and args.models_cmd in ("convert", "compare"):
        from ops.models_cmd import cmd_models_optimize

        return cmd_models_optimize(args, settings)
    if args.cmd == "models" and args.models_cmd in ("prune", "distill"):
        from ops.optimize_cmd import cmd_optimize

        return cmd_optimize(args, settings)
    if args.cmd == "models":
        from workers.boot.cli import cmd_models

        return cmd_models(args, settings)
    if args.cmd == "flower":
        from ops.flower.run import cmd_flower

        return cmd_flower(args, settings)
    if args.cmd == "bench":
        from ops.bench.cli import cmd_bench

        return cmd_bench(args, settings)
    if args.cmd == "tune":
        from ops.bench.cli import cmd_tune

        return cmd_tune(args, settings)
    if args.cmd == "gateway":
        from ops.gateway_cmd import cmd_gateway

        return cmd_gateway(args, settings)
    if args.cmd == "demo":
        from ops.demo.keep import KEPT_FILE, stop_kept
        from ops.demo.run import run_demo, run_dir

        if args.stop is not None:
            return stop_kept(Path(args.stop) if args.stop else run_dir(settings) / KEPT_FILE)
        # Only a Redis the user configured is used; the default address may belong to
        # someone else, so without INFERQ_BROKER_URL the demo starts its own.
        return run_demo(settings, keep=args.keep, use_configured="INFERQ_BROKER_URL" in os.environ)
    from producers.client import Client

    _client_warnings_on_stderr()
    with Client(settings) as client:
        if args.cmd == "submit":
            from ops.jobs_cmd import cmd_submit

            return cmd_submit(args, client)
        if args.cmd == "result":
            from ops.jobs_cmd import cmd_result

            return cmd_result(args, client)
        if args.cmd == "status":
            from ops.status import print_status

            return print_status(client, as_json=args.json)
    raise SystemExit(f"unknown command {args.cmd}")


def _client_warnings_on_stderr() -> None:
    """The client library's warnings (a model no live worker serves) as the CLI's own lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("inferq: warning: %(message)s"))
    logger = logging.getLogger("producers")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
