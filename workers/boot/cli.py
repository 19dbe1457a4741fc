"""The worker side of the ``inferq`` command: ``worker`` and ``models``.

``ops.cli`` (the ``inferq`` command) and ``python -m workers`` (what ``inferq worker
--concurrency N`` starts per process) both parse ``worker``'s options here. Only light
modules are imported at the top: the worker itself, TensorFlow and LiteRT load when a
command needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from tasks.errors import BadInput
from tasks.keys import check_name
from tasks.schema import ModelInfo
from tasks.settings import Settings
from workers.models.registry import META_FILE, Registry, resolve_inside


def add_worker_arguments(w: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``inferq worker`` (and ``python -m workers``)."""
    w.add_argument(
        "--models", help="comma list of MODEL or MODEL:VARIANT (default: all in the models folder)"
    )
    w.add_argument("--threads", type=int, help="XNNPACK/TensorFlow threads per process (INFERQ_THREADS)")
    w.add_argument(
        "--concurrency",
        action=_ConcurrencyAction,
        metavar="N|auto",
        help="worker processes (INFERQ_CONCURRENCY, which takes auto too; this option wins over it); "
        "auto: processes, threads and batch size chosen from the cores and the models' measured "
        "cost (logged with the reason)",
    )
    w.add_argument("--hostname", help="Celery node name (default inferq-PID@host)")
    w.add_argument(
        "--max-batch-size", type=int, help="override every model's max_batch_size (1: no batching)"
    )
    w.add_argument("--max-wait-ms", type=float, help="override every model's max_wait_ms")
    w.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus port (INFERQ_METRICS_PORT; 0: off); if it is taken, the worker serves "
        "/metrics on a free port instead, logs it, and `inferq status` shows it",
    )
    w.set_defaults(auto_concurrency=False)
    return w


class _ConcurrencyAction(argparse.Action):
    """``--concurrency N`` (into ``concurrency``, as ``Settings`` takes it) or ``auto``
    (``auto_concurrency``; ``concurrency`` stays unset until the plan is made)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values == "auto":
            namespace.auto_concurrency, namespace.concurrency = True, None
            return
        try:
            n = int(values)
        except ValueError:
            n = 0
        if n < 1:  # here, where the option's name is known (Settings would name its field)
            parser.error(f"argument --concurrency: expected a positive number or auto, got {values!r}")
        namespace.auto_concurrency, namespace.concurrency = False, n


def check_worker_options(args: argparse.Namespace) -> None:
    """``BadInput`` for option values a worker would accept and then misbehave on (a batch
    limit of 0 would never run a batch), before any model is loaded."""
    if args.max_batch_size is not None and args.max_batch_size < 1:
        raise BadInput(f"--max-batch-size must be >= 1 (1: no batching), got {args.max_batch_size}")
    if args.max_wait_ms is not None and not args.max_wait_ms >= 0:
        raise BadInput(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise BadInput(f"--metrics-port must be a port number (0: off), got {args.metrics_port}")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.boot.start import run_worker, supervise
    from workers.serving.consumer import BatchLimits

    check_worker_options(args)
    specs = [s for s in (args.models or "").split(",") if s] or None
    if wants_auto_plan(args, settings):
        settings = apply_auto_plan(args, settings, specs)
    if settings.concurrency > 1:
        # Checked once here: a child that cannot find its models would be restarted forever.
        Registry(settings.models_dir).select(specs)
        logging.basicConfig(level=settings.log_level)
        extra = []
        if args.max_batch_size is not None:
            extra += ["--max-batch-size", str(args.max_batch_size)]
        if args.max_wait_ms is not None:
            extra += ["--max-wait-ms", str(args.max_wait_ms)]
        if args.metrics_port is not None:  # the first process's; the others count up from it
            settings = settings.with_(metrics_port=args.metrics_port)
        return supervise(settings, specs, settings.concurrency, extra)
    limits = BatchLimits(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms)
    run_worker(settings, specs, hostname=args.hostname, limits=limits, metrics_port=args.metrics_port)
    return 0


def wants_auto_plan(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether this worker plans its processes: ``--concurrency auto``, or
    ``INFERQ_CONCURRENCY=auto`` (``settings.auto_concurrency``) with no ``--concurrency N``.

    The environment's ``auto`` reaches here through ``Settings``, not by reading the
    variable, so that it is read once, with the other settings, and every process that
    builds ``Settings.from_env()`` (gateway, producers, this worker's children) accepts it.
    The option is checked here as well as in ``from_env`` (which clears the flag for an
    override) so that the command line wins however ``settings`` was built.
    """
    if args.auto_concurrency:
        return True
    return settings.auto_concurrency and args.concurrency is None


def apply_auto_plan(args: argparse.Namespace, settings: Settings, specs: list[str] | None) -> Settings:
    """``--concurrency auto`` (or ``INFERQ_CONCURRENCY=auto``): measure the models,
    choose, log why; the settings to run with (no longer ``auto``: children get numbers).

    ``--threads`` and ``--max-batch-size`` given beside it are kept (``args`` gets the
    chosen batch size, as if it had been given).
    """
    from workers.boot.auto_plan import choose_plan
    from workers.boot.calibrate import calibrate_in_child
    from workers.boot.cores import available_cores

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Registry(settings.models_dir).select(specs)  # a missing model is named now, not by the child
    cores = available_cores()
    costs = calibrate_in_child(settings, specs, cores)
    plan = choose_plan(cores, costs, threads=args.threads, max_batch_size=args.max_batch_size)
    logging.getLogger("inferq.worker").info("--concurrency auto: %s", plan.describe())
    args.max_batch_size = plan.max_batch_size
    return settings.with_(concurrency=plan.processes, threads=plan.threads, auto_concurrency=False)


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    registry = Registry(settings.models_dir)
    if args.models_cmd == "build-examples":
        from workers.models.examples import build_examples

        only = [s for s in (args.only or "").split(",") if s] or None
        built = build_examples(settings.models_dir, only=only, force=args.force)
        print(f"built: {', '.join(built) or 'nothing (all present)'} in {settings.models_dir.resolve()}")
        return 0
    if args.models_cmd == "add":
        entry = add_model(registry, args.name, Path(args.path), args.variant, args.version, force=args.force)
        print(f"added {entry.key} version {entry.info.version} ({entry.info.size_bytes} bytes)")
        return 0
    if args.models_cmd == "list":
        registry.require()  # an empty table would hide a folder looked for in the wrong place
        entries = registry.entries()
        if args.json:
            print(
                json.dumps(
                    [{**e.info.to_dict(), "path": str(e.path), "sha256": e.sha256} for e in entries], indent=2
                )
            )
            return 0
        print(
            f"{'model':<16} {'variant':<11} {'runtime':<10} {'bytes':>10}  {'version':<12}  inputs -> outputs"
        )
        for e in entries:
            i = e.info
            ins = " ".join(s.describe() for s in i.inputs)
            outs = " ".join(s.describe() for s in i.outputs)
            print(
                f"{i.name:<16} {i.variant:<11} {i.runtime:<10} {i.size_bytes:>10}  {i.version:<12}  {ins} -> {outs}"
            )
        return 0
    raise SystemExit(f"unknown models command {args.models_cmd}")


def add_model(  # type: ignore[no-untyped-def]
    registry: Registry,
    name: str,
    path: Path,
    variant: str | None,
    version: str | None,
    *,
    force: bool = False,
):
    """Register a user's ``.tflite`` file or SavedModel folder, reading its tensors.

    Names become folder names under the models folder, so they are checked before
    anything is read: plain names only (no ``/``, ``..``, leading dot, NUL). An existing
    ``name:variant`` is replaced only with ``force``: workers serving it would otherwise
    answer from another model after their next restart, with nobody having said so.
    """
    check_name("model", name)
    if variant is not None:
        check_name("variant", variant)
    if not path.exists():
        raise BadInput(f"{path} does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise BadInput(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
        from workers.models.runtimes.tensorflow import describe_savedmodel

        variant = variant or "savedmodel"
        runtime = "tensorflow"
        ins, outs = describe_savedmodel(path)
    elif path.suffix == ".tflite":
        from workers.models.runtimes.litert import describe_tflite

        ins, outs = describe_tflite(path)
        runtime = "litert"
        variant = variant or ("int8" if any(s.quantization for s in ins) else "fp32")
    else:
        raise BadInput(f"{path}: expected a .tflite file or a SavedModel folder")
    check_name("variant", variant)
    resolve_inside(registry.root, f"{name}/{variant}")
    existing = registry.root / name / variant / META_FILE
    if existing.is_file() and not force:
        raise BadInput(
            f"{name}:{variant} already exists in {registry.root.resolve()}; "
            "pass --force to replace it (or --variant to add another variant)"
        )
    info = ModelInfo(
        name=name, variant=variant, version=version or "", runtime=runtime, inputs=ins, outputs=outs
    )
    return registry.write(info, path)
