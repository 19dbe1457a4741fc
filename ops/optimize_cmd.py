"""``inferq models prune`` and ``inferq models distill``: the command line over
``workers.models.optimize.prune`` and ``distill``, which hold every decision.

Both train with TensorFlow (the ``tf`` extra), imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tasks.errors import BadInput
from tasks.settings import Settings


def add_optimize_parsers(msub: Any) -> None:
    """Add ``prune`` and ``distill`` to ``inferq models``' subcommands."""
    p = msub.add_parser(
        "prune",
        help="magnitude-prune a Keras classifier, fine-tune it, serve it as a variant (needs the tf extra)",
    )
    p.add_argument("src", metavar="SRC", help="a .keras file, or a model with a Keras source (digits)")
    p.add_argument("--sparsity", required=True, help="share of each kernel's weights set to zero, in (0, 1)")
    p.add_argument(
        "--fine-tune",
        type=Path,
        metavar="DATA",
        help="training examples: an .npz with x[, y], or an .npy of inputs (labels: --labels); "
        "without it the weights are pruned once, with no training",
    )
    p.add_argument("--labels", type=Path, help="an .npy of integer labels for --fine-tune's .npy")
    p.add_argument("--epochs", type=int, default=4, help="fine-tune epochs (default 4)")
    _common(p, "pruned<PERCENT>, e.g. pruned50")

    d = msub.add_parser(
        "distill",
        help="train a small student on a Keras classifier's soft targets, serve it as a variant "
        "(needs the tf extra)",
    )
    d.add_argument(
        "teacher", metavar="TEACHER", help="a .keras file, or a model with a Keras source (digits)"
    )
    d.add_argument(
        "--student",
        required=True,
        metavar="SPEC",
        help="comma list of conv:FILTERS, pool:SIZE, dense:UNITS (e.g. conv:8,dense:32), or tiny / small",
    )
    d.add_argument(
        "--data", type=Path, required=True, help="training examples: an .npz with x[, y] or an .npy"
    )
    d.add_argument("--labels", type=Path, help="an .npy of integer labels for --data's .npy (hard labels)")
    d.add_argument("--temperature", type=float, default=4.0, help="softens both sides' logits (default 4)")
    d.add_argument("--alpha", type=float, help="weight of the hard labels' loss, in [0, 1] (default 0.1)")
    d.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    _common(d, "distilled")


def _common(p: argparse.ArgumentParser, default_variant: str) -> None:
    p.add_argument("--name", help="the model the variant joins (default: the one SRC lies under)")
    p.add_argument("--variant", help=f"the new variant's name (default {default_variant})")
    p.add_argument(
        "--eval-data",
        type=Path,
        help="labelled examples to measure accuracy on (default: the model's data/heldout_{x,y}.npy)",
    )
    p.add_argument("--eval-labels", type=Path, help="an .npy of labels for --eval-data's .npy")
    p.add_argument("--force", action="store_true", help="replace an existing MODEL:VARIANT")
    p.add_argument("--json", action="store_true", help="the report as JSON")


def _fraction(text: str) -> float:
    """``--sparsity`` read here rather than by argparse, so that a word in its place gets
    the one-line error a number out of range gets (the range is the library's check)."""
    try:
        return float(text)
    except ValueError:
        raise BadInput(
            f"--sparsity must be a number between 0 and 1 (0.5: half the weights), got {text!r}"
        ) from None


def cmd_optimize(args: argparse.Namespace, settings: Settings) -> int:
    from workers.models.registry import Registry

    registry = Registry(settings.models_dir)
    if args.models_cmd == "prune":
        from workers.models.optimize.prune import PruneOptions, prune

        report: Any = prune(
            registry,
            args.src,
            PruneOptions(sparsity=_fraction(args.sparsity), epochs=args.epochs),
            fine_tune=args.fine_tune,
            labels=args.labels,
            eval_data=args.eval_data,
            eval_labels=args.eval_labels,
            name=args.name,
            variant=args.variant,
            force=args.force,
        )
        lines = _prune_lines(report)
    else:
        from workers.models.optimize.distill import DistillOptions, distill

        options = DistillOptions(temperature=args.temperature, alpha=args.alpha, epochs=args.epochs)
        report = distill(
            registry,
            args.teacher,
            args.student,
            args.data,
            options,
            labels=args.labels,
            eval_data=args.eval_data,
            eval_labels=args.eval_labels,
            name=args.name,
            variant=args.variant,
            force=args.force,
        )
        lines = _distill_lines(report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(lines))
    return 0


def _accuracy(before: float | None, after: float | None, names: tuple[str, str], source: str | None) -> str:
    if before is None or after is None:
        return "not measured: no held-out data beside the model; pass --eval-data (and --eval-labels)"
    change = 100.0 * (after - before)
    return f"{names[0]} {100 * before:.2f}%, {names[1]} {100 * after:.2f}% ({change:+.2f} points) on {source}"


def _prune_lines(r: Any) -> list[str]:
    model, _, variant = r.key.partition(":")
    layers = ", ".join(f"{name} {100 * share:.1f}%" for name, share in r.layers.items())
    return [
        f"pruned {r.key} (version {r.version})",
        f"  sparsity   {100 * r.file_sparsity:.1f}% of the kernel weights in the .tflite are zero "
        f"(target {100 * r.target_sparsity:g}%; {layers})",
        f"  fine-tune  {r.fine_tune}",
        f"  accuracy   {_accuracy(r.accuracy_dense, r.accuracy_pruned, ('dense', 'pruned'), r.eval_source)}",
        f"  size       .tflite {r.dense_bytes:,} B dense, {r.pruned_bytes:,} B pruned (zeros are stored)",
        f"  gzip       {r.dense_gzip_bytes:,} B dense, {r.pruned_gzip_bytes:,} B pruned "
        f"({100 * r.gzip_ratio:.1f}% of dense)",
        f'serve it: client.submit("{model}", x, variant="{variant}")',
    ]


def _distill_lines(r: Any) -> list[str]:
    model, _, variant = r.key.partition(":")
    return [
        f"distilled {r.key} (version {r.version}), student {r.student}",
        f"  params     teacher {r.teacher_params:,}, student {r.student_params:,}",
        f"  size       .tflite teacher {r.teacher_bytes:,} B, student {r.student_bytes:,} B",
        f"  latency    teacher {1e6 * r.teacher_latency_s:.1f} us, student {1e6 * r.student_latency_s:.1f} us "
        f"per input at batch 1, one thread ({r.speedup:.1f}x faster)",
        f"  accuracy   {_accuracy(r.accuracy_teacher, r.accuracy_student, ('teacher', 'student'), r.eval_source)}",
        f"  trained    {r.trained}",
        f'serve it: client.submit("{model}", x, variant="{variant}")',
    ]
