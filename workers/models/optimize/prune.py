"""``inferq models prune``: magnitude pruning of a Keras classifier, served as a variant.

An own implementation on Keras 3 (the TF Model Optimization toolkit needs tf_keras):
every Conv and Dense kernel gets a keep-mask of its largest weights. Without
fine-tuning data the masks are set once at the target sparsity; with data the share
of zeros rises along a cubic schedule over the first part of a short fine-tune and is
then held, and after every training step the masks are applied again, so the
optimizer's updates never bring a pruned weight back.

The result is exported as a float32 ``.tflite``: the zeros are still stored, four bytes
each, so the file is as large as the dense one, but it compresses (gzip) to little more
than its non-zero weights. Accuracy before and after is measured on the ``.tflite``
files (the dense one converted here the same way), on held-out data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput
from workers.models.optimize import tflite_eval
from workers.models.optimize.derived_variant import sibling_info, target_name
from workers.models.optimize.keras_source import KerasSource, keras, load_classifier, scores_of, tflite_bytes
from workers.models.optimize.pruning_masks import check_sparsity, magnitude_mask, scheduled_sparsity
from workers.models.optimize.register import check_new_variant, register_variant
from workers.models.optimize.training_data import Examples, check_examples, eval_examples, load_examples
from workers.models.registry import Registry

#: Kernel attributes of the layers pruned (Dense, EinsumDense, Conv*, DepthwiseConv*,
#: SeparableConv*); biases, norms and embeddings are left whole: they are few, and
#: zeroing them shifts every output rather than dropping one connection.
KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")
PRUNED_LAYERS = (
    "Dense",
    "EinsumDense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)


@dataclass(frozen=True)
class PruneOptions:
    """How to prune; the defaults fine-tune digits back to its accuracy in seconds."""

    sparsity: float
    epochs: int = 4
    batch_size: int = 32
    #: Lower than a first training's: the weights are close to a good point already.
    learning_rate: float = 3e-4
    #: Share of the fine-tune's steps over which the sparsity ramps up to its target;
    #: the rest are taken at the target, to recover accuracy with the final masks.
    ramp: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class PruneReport:
    """What ``prune`` made and how it compares with the dense model (both as ``.tflite``)."""

    key: str
    version: str
    target_sparsity: float
    #: Share of zeros in each pruned kernel, by layer and attribute (``dense/kernel``).
    layers: dict[str, float]
    #: Zeros and weights counted in the exported file's float kernels.
    file_zeros: int
    file_weights: int
    fine_tune: str
    eval_source: str | None
    accuracy_dense: float | None
    accuracy_pruned: float | None
    dense_bytes: int
    dense_gzip_bytes: int
    pruned_bytes: int
    pruned_gzip_bytes: int

    @property
    def file_sparsity(self) -> float:
        return self.file_zeros / self.file_weights if self.file_weights else 0.0

    @property
    def gzip_ratio(self) -> float:
        return self.pruned_gzip_bytes / self.dense_gzip_bytes

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "file_sparsity": self.file_sparsity, "gzip_ratio": self.gzip_ratio}


def _walk(layer: Any) -> Iterator[Any]:
    for inner in getattr(layer, "layers", ()):
        yield inner
        yield from _walk(inner)


def prunable_kernels(model: Any) -> list[tuple[str, Any]]:
    """``(layer/attribute, variable)`` for every kernel pruned, nested models included."""
    out = []
    for layer in _walk(model):
        if type(layer).__name__ not in PRUNED_LAYERS:
            continue
        for attr in KERNEL_ATTRIBUTES:
            var = getattr(layer, attr, None)
            if var is not None and hasattr(var, "assign"):
                out.append((f"{layer.name}/{attr}", var))
    return out


class Masks:
    """The keep-masks of a model's kernels, set from the weights' magnitudes."""

    def __init__(self, kernels: list[tuple[str, Any]]) -> None:
        self.kernels = kernels
        self.masks: list[Any] = [None] * len(kernels)

    def set(self, sparsity: float) -> None:
        """New masks: the ``sparsity`` share of each kernel's smallest weights pruned.

        Weights pruned at an earlier step are zero and so still among the smallest: the
        masks only grow, as the schedule means them to.
        """
        k = keras()
        for i, (_, var) in enumerate(self.kernels):
            self.masks[i] = k.ops.convert_to_tensor(magnitude_mask(np.asarray(var.numpy()), sparsity))
        self.apply()

    def apply(self) -> None:
        """Zero the pruned weights. ``where`` and not a product: ``-w * 0`` is ``-0.0``,
        whose sign bit would spoil the runs of zero bytes that gzip compresses."""
        k = keras()
        for (_, var), mask in zip(self.kernels, self.masks, strict=True):
            if mask is not None:
                var.assign(k.ops.where(mask, var.value, k.ops.zeros_like(var.value)))

    def shares(self) -> dict[str, float]:
        return {name: float(np.mean(np.asarray(var.numpy()) == 0)) for name, var in self.kernels}


def _schedule_callback(masks: Masks, target: float, end_step: int, every: int) -> Any:
    """A Keras callback that raises the sparsity on schedule and re-applies the masks
    after each step (the optimizer has just moved the pruned weights off zero)."""
    k = keras()

    class PruningSchedule(k.callbacks.Callback):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.step = 0

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.step <= end_step and self.step % every == 0:
                masks.set(scheduled_sparsity(self.step, end_step, target))

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            masks.apply()
            self.step += 1

    return PruningSchedule()


def prune_model(source: KerasSource, options: PruneOptions, train: Examples | None) -> dict[str, float]:
    """Prune ``source.model`` in place (fine-tuned on ``train`` when given); returns the
    share of zeros per kernel."""
    k = keras()
    kernels = prunable_kernels(source.model)
    if not kernels:
        raise BadInput(f"{source.path}: no Conv or Dense kernels to prune")
    masks = Masks(kernels)
    if train is None:
        masks.set(options.sparsity)
        return masks.shares()
    # Without labels the dense model's own answers are the targets: pruning should
    # change the weights, not what the model says.
    y = train.y if train.y is not None else scores_of(source.model, train.x).argmax(-1)
    steps = options.epochs * math.ceil(len(train) / options.batch_size)
    end_step = max(1, int(options.ramp * steps))
    scores = source.scores_model()
    scores.compile(
        optimizer=k.optimizers.Adam(options.learning_rate),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=not source.outputs_probabilities),
    )
    scores.fit(
        train.x,
        y,
        epochs=options.epochs,
        batch_size=options.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[_schedule_callback(masks, options.sparsity, end_step, max(1, end_step // 8))],
    )
    masks.set(options.sparsity)  # exactly the target, whatever the step count allowed
    return masks.shares()


def prune(
    registry: Registry,
    src: str,
    options: PruneOptions,
    *,
    fine_tune: Path | None = None,
    labels: Path | None = None,
    eval_data: Path | None = None,
    eval_labels: Path | None = None,
    name: str | None = None,
    variant: str | None = None,
    force: bool = False,
) -> PruneReport:
    """Prune SRC, export it, register it as ``name:variant`` and measure it against the
    dense model. Every argument is checked before any training starts."""
    check_sparsity(options.sparsity)
    if options.epochs < 1:
        raise BadInput(f"--epochs must be >= 1, got {options.epochs}")
    if labels is not None and fine_tune is None:
        raise BadInput("--labels goes with --fine-tune DATA")
    source = load_classifier(registry, src)
    model_name = target_name(source.name, name, src)
    variant = variant or f"pruned{round(options.sparsity * 100)}"
    check_new_variant(registry, model_name, variant, force=force)
    train = None
    if fine_tune is not None:
        train = check_examples(
            load_examples(fine_tune, labels, what="--fine-tune"),
            source.input_shape,
            source.classes,
            what="--fine-tune",
        )
    test = eval_examples(
        registry.data_dir(model_name), eval_data, eval_labels, source.input_shape, source.classes
    )

    keras().utils.set_random_seed(options.seed)
    dense = tflite_bytes(source.model, label=f"{source.path} (dense)")
    shares = prune_model(source, options, train)
    pruned = tflite_bytes(source.model, label=f"{source.path} (pruned)")
    zeros, weights = tflite_eval.weight_sparsity(pruned)
    fine_tuned = (
        "none (one-shot)"
        if train is None
        else f"{options.epochs} epochs on {len(train)} examples of {train.source} "
        f"({'its labels' if train.y is not None else 'the dense model answers as labels'})"
    )
    made_by = {
        "method": "magnitude pruning",
        "source": str(source.path),
        "sparsity": options.sparsity,
        "fine_tune": fine_tuned,
    }
    entry = register_variant(
        registry,
        pruned,
        name=model_name,
        variant=variant,
        base=sibling_info(registry, model_name),
        provenance=made_by,
    )
    return PruneReport(
        key=entry.key,
        version=entry.info.version,
        target_sparsity=options.sparsity,
        layers=shares,
        file_zeros=zeros,
        file_weights=weights,
        fine_tune=fine_tuned,
        eval_source=test.source if test else None,
        accuracy_dense=tflite_eval.accuracy(dense, test.x, test.y) if test and test.y is not None else None,
        accuracy_pruned=tflite_eval.accuracy(pruned, test.x, test.y) if test and test.y is not None else None,
        dense_bytes=len(dense),
        dense_gzip_bytes=tflite_eval.gzip_size(dense),
        pruned_bytes=len(pruned),
        pruned_gzip_bytes=tflite_eval.gzip_size(pruned),
    )
