"""``inferq models convert`` and ``inferq models compare``: thin wrappers over
``workers.models.optimize`` (arguments in, one result or one table out).

Imported by the ``inferq`` command at start-up for its arguments only; TensorFlow,
the quantizer and matplotlib load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tasks.errors import BadInput
from tasks.settings import Settings

COMMANDS = ("convert", "compare")
MODES = ("fp32", "fp16", "int8", "dynamic-int8", "int16x8", "weight-only")


def add_model_commands(msub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``convert`` and ``compare`` to ``inferq models``."""
    c = msub.add_parser(
        "convert",
        help="make a cheaper variant (fp16, int8, ...) of a model and register it",
        description="From a SavedModel folder or Keras file: TensorFlow's TFLite converter. From a "
        ".tflite file alone: the LiteRT quantizer. int8 and int16x8 need --calibration.",
    )
    c.add_argument(
        "source",
        metavar="SRC",
        help="a SavedModel folder, a .keras/.h5 file, a .tflite file, or MODEL:VARIANT",
    )
    c.add_argument("--to", required=True, choices=MODES, help="the new variant's precision")
    c.add_argument("--calibration", type=Path, metavar="FILE|DIR", help=".npy, .npz or a folder of images")
    c.add_argument(
        "--calibration-samples", type=int, default=256, help="at most this many samples (default 256)"
    )
    c.add_argument(
        "--image-range", default="0,1", metavar="LO,HI", help="images scaled to this range (default 0,1)"
    )
    c.add_argument("--name", help="the model's name (default: the source's, for MODEL:VARIANT)")
    c.add_argument("--variant", help="the new variant's name (default: the mode, e.g. int8)")
    c.add_argument("--force", action="store_true", help="replace an existing MODEL:VARIANT")
    c.add_argument("--json", action="store_true")

    m = msub.add_parser(
        "compare",
        help="measure a model's variants side by side: size, latency, throughput, RSS, agreement",
        description="Each variant runs in a fresh process, one after another, on this machine. "
        "Writes OUT.json and OUT.png (the plot needs the bench extra) and prints a table.",
    )
    m.add_argument("model", metavar="MODEL")
    m.add_argument("--variants", help="comma list (default: every variant in the models folder)")
    m.add_argument("--reference", default="fp32", help="the variant others are compared with (default fp32)")
    m.add_argument(
        "--data", type=Path, help=".npy, .npz or image folder (default: the model's held-out data)"
    )
    m.add_argument("--labels", type=Path, help=".npy of class indices, one per input: adds accuracy")
    m.add_argument("--samples", type=int, default=512, help="inputs used, at most (default 512)")
    m.add_argument("--duration", type=float, default=1.0, help="seconds of timed calls per batch size")
    m.add_argument("--max-batch", type=int, default=64, help="largest batch size tried (default 64)")
    m.add_argument("--threads", type=int, help="LiteRT/TensorFlow threads (INFERQ_THREADS)")
    m.add_argument("--image-range", default="0,1", metavar="LO,HI", help="images scaled to this range")
    m.add_argument("--out", type=Path, help="write OUT.json and OUT.png (default: compare-MODEL in .)")
    m.add_argument("--json", action="store_true", help="print the JSON instead of the table")


def image_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise BadInput(f"--image-range takes LO,HI (e.g. 0,1 or -1,1), got {text!r}") from None
    if not lo < hi:
        raise BadInput(f"--image-range needs LO < HI, got {text!r}")
    return lo, hi


def cmd_models_optimize(args: argparse.Namespace, settings: Settings) -> int:
    if args.models_cmd == "convert":
        return _convert(args, settings)
    return _compare(args, settings)


def _convert(args: argparse.Namespace, settings: Settings) -> int:
    from workers.models.optimize.make import convert_model
    from workers.models.optimize.modes import NEEDS_CALIBRATION, parse_mode
    from workers.models.registry import Registry

    if args.calibration_samples < 1:
        raise BadInput(f"--calibration-samples must be >= 1, got {args.calibration_samples}")
    mode = parse_mode(args.to)
    if args.calibration is not None and mode not in NEEDS_CALIBRATION:
        # Said, not silently dropped: the user may think the data shaped the variant.
        print(
            f"inferq: note: --to {mode.value} does not calibrate; --calibration is not used", file=sys.stderr
        )
    registry = Registry(settings.models_dir)
    registry.require()
    made = convert_model(
        registry,
        args.source,
        mode,
        calibration=args.calibration,
        calibration_limit=args.calibration_samples,
        image_range=image_range(args.image_range),
        name=args.name,
        variant=args.variant,
        force=args.force,
    )
    info = made.entry.info
    if args.json:
        doc = {
            "model": info.name,
            "variant": info.variant,
            "version": info.version,
            "bytes": info.size_bytes,
            "from": made.source.label,
            "source_bytes": made.source_bytes,
            "mode": made.mode.value,
            "tool": made.tool,
            "calibration_samples": made.calibration_samples,
            "seconds": round(made.seconds, 2),
            "path": str(made.entry.path),
        }
        print(json.dumps(doc))
        return 0
    calibrated = f", {made.calibration_samples} calibration samples" if made.calibration_samples else ""
    print(
        f"converted {made.source.label} -> {info.key} ({made.mode.value}, {made.tool}{calibrated}) "
        f"in {made.seconds:.1f} s: {info.size_bytes:,} bytes, version {info.version}"
    )
    print(f"serve it: inferq worker --models {info.key}; submit with variant={info.variant!r}")
    return 0


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    from workers.models.optimize.compare import compare_variants
    from workers.models.optimize.report import table
    from workers.models.registry import Registry

    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        can_plot = False
    else:
        can_plot = True
    variants = [v for v in (args.variants or "").split(",") if v] or None
    result = compare_variants(
        Registry(settings.models_dir),
        args.model,
        variants,
        reference=args.reference,
        data=args.data,
        labels=args.labels,
        samples=args.samples,
        duration_s=args.duration,
        threads=args.threads or settings.threads,
        max_batch=args.max_batch,
        image_range=image_range(args.image_range),
    )
    stem = args.out or Path(f"compare-{args.model}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = [stem.with_name(stem.name + ".json")]
    written[0].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    note = ""
    if can_plot:
        from workers.models.optimize.plot import plot

        written.append(plot(result, stem.with_name(stem.name + ".png")))
    else:
        note = " (no plot: matplotlib is not installed; pip install 'inferq[bench]')"
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(table(result))
    print(f"wrote {', '.join(str(p) for p in written)}{note}", file=sys.stderr if args.json else sys.stdout)
    return 0
