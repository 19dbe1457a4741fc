"""``inferq models distill``: a small student trained on a Keras teacher's soft targets.

Keras 3 (3.12 on) has a distillation API, ``keras.distillation.Distiller``: a
``keras.Model`` whose loss mixes the student's loss on the hard labels (weight
``alpha``) with a distillation loss against the frozen teacher (weight ``1 - alpha``).
Its ``LogitsDistillation`` softens both sides' logits by a temperature T and compares
them with the KL divergence, scaled by T² (Hinton et al., 2015) so the soft part keeps
its weight whatever T is. A teacher that outputs probabilities (a softmax) is read as
logits through ``log``: softmax(log p / T) is exactly the teacher's softmax at
temperature T, since softmax ignores the constant log-sum-exp by which log p and the
logits differ.

The student is exported to ``.tflite``, registered as a variant of the teacher's model
and measured against the teacher's own ``.tflite`` (converted here the same way): time
per input at batch 1 and accuracy on held-out data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.errors import BadInput
from workers.models.optimize import tflite_eval
from workers.models.optimize.derived_variant import sibling_info, target_name
from workers.models.optimize.keras_source import KerasSource, keras, load_classifier, tflite_bytes
from workers.models.optimize.register import check_new_variant, register_variant
from workers.models.optimize.student import StudentSpec, build_student, parse_student
from workers.models.optimize.training_data import Examples, check_examples, eval_examples, load_examples
from workers.models.registry import Registry

#: The hard labels' weight when DATA has them: soft targets carry most of the signal
#: (how the teacher ranks the wrong classes); the labels correct its few mistakes.
DEFAULT_ALPHA = 0.1


@dataclass(frozen=True)
class DistillOptions:
    """How to distil; the defaults reach the teacher's accuracy on digits in under a minute."""

    temperature: float = 4.0
    #: Weight of the hard-label loss; None: DEFAULT_ALPHA with labels, 0 without.
    alpha: float | None = None
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0


@dataclass(frozen=True)
class DistillReport:
    """The student variant against its teacher, both as ``.tflite`` on this machine."""

    key: str
    version: str
    student: str
    teacher_params: int
    student_params: int
    teacher_bytes: int
    student_bytes: int
    #: Median seconds per input at batch 1 (set input, invoke, read output), one thread.
    teacher_latency_s: float
    student_latency_s: float
    trained: str
    eval_source: str | None
    accuracy_teacher: float | None
    accuracy_student: float | None

    @property
    def speedup(self) -> float:
        return self.teacher_latency_s / self.student_latency_s

    @property
    def accuracy_loss_points(self) -> float | None:
        if self.accuracy_teacher is None or self.accuracy_student is None:
            return None
        return 100.0 * (self.accuracy_teacher - self.accuracy_student)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup, "accuracy_loss_points": self.accuracy_loss_points}


def check_options(options: DistillOptions) -> None:
    if not options.temperature > 0 or math.isinf(options.temperature):
        raise BadInput(f"--temperature must be a positive number, got {options.temperature}")
    if options.alpha is not None and not 0.0 <= options.alpha <= 1.0:
        raise BadInput(f"--alpha (the hard labels' weight) must lie in [0, 1], got {options.alpha}")
    if options.epochs < 1:
        raise BadInput(f"--epochs must be >= 1, got {options.epochs}")


def teacher_logits(source: KerasSource) -> Any:
    """The teacher with logits out: as it is, or ``log`` of its probabilities."""
    k = keras()
    scores = source.model.outputs[0]
    if source.outputs_probabilities:
        scores = k.ops.log(k.ops.clip(scores, 1e-7, 1.0))  # a 0 would be -inf, and NaN after /T
    teacher = k.Model(source.model.inputs, scores, name="teacher_logits")
    teacher.trainable = False
    return teacher


def train_student(
    source: KerasSource, spec: StudentSpec, train: Examples, options: DistillOptions
) -> tuple[Any, str]:
    """The trained student in the teacher's form (same input name, output names and kind of
    scores), and a line saying how it was trained."""
    k = keras()
    logits_model, logits = build_student(spec, source.input_shape, source.input_name, source.classes)
    alpha = 0.0 if train.y is None else (DEFAULT_ALPHA if options.alpha is None else options.alpha)
    distiller = k.distillation.Distiller(
        teacher=teacher_logits(source),
        student=logits_model,
        # The loss given as an instance: the Distiller softens logits into probabilities
        # only for a KLDivergence instance, not for the "kl_divergence" function.
        distillation_losses=k.distillation.LogitsDistillation(
            temperature=options.temperature, loss=k.losses.KLDivergence()
        ),
        student_loss_weight=alpha,
    )
    distiller.compile(
        optimizer=k.optimizers.Adam(options.learning_rate),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    distiller.fit(
        train.x, train.y, epochs=options.epochs, batch_size=options.batch_size, shuffle=True, verbose=0
    )
    head = logits
    if source.outputs_probabilities:
        head = k.layers.Activation("softmax", name="probabilities")(logits)
    served = k.Model(logits_model.inputs, k.tree.pack_sequence_as(source.output_struct, [head]))
    how = (
        f"{options.epochs} epochs on {len(train)} examples of {train.source}, T={options.temperature:g}, "
        + (f"alpha={alpha:g} (hard labels)" if train.y is not None else "soft targets only (no labels)")
    )
    return served, how


def distill(
    registry: Registry,
    teacher_src: str,
    student: str,
    data: Path,
    options: DistillOptions,
    *,
    labels: Path | None = None,
    eval_data: Path | None = None,
    eval_labels: Path | None = None,
    name: str | None = None,
    variant: str | None = None,
    force: bool = False,
) -> DistillReport:
    """Distil TEACHER into a STUDENT on DATA, register the student as ``name:variant`` and
    measure it against the teacher. Every argument is checked before training starts."""
    check_options(options)
    spec = parse_student(student)
    source = load_classifier(registry, teacher_src)
    model_name = target_name(source.name, name, teacher_src)
    variant = variant or "distilled"
    check_new_variant(registry, model_name, variant, force=force)
    train = check_examples(
        load_examples(data, labels, what="--data"), source.input_shape, source.classes, what="--data"
    )
    if options.alpha is not None and train.y is None:
        raise BadInput(
            f"--alpha weighs hard labels, and --data {data} has none (give --labels, or drop --alpha)"
        )
    test = eval_examples(
        registry.data_dir(model_name), eval_data, eval_labels, source.input_shape, source.classes
    )

    keras().utils.set_random_seed(options.seed)
    served, how = train_student(source, spec, train, options)
    teacher_blob = tflite_bytes(source.model, label=f"{source.path} (teacher)")
    student_blob = tflite_bytes(served, label=f"student {spec.text}")
    made_by = {"method": "distillation", "teacher": str(source.path), "student": spec.text, "trained": how}
    entry = register_variant(
        registry,
        student_blob,
        name=model_name,
        variant=variant,
        base=sibling_info(registry, model_name),
        provenance=made_by,
    )
    probe = (test or train).x[:200]
    latency = tflite_eval.batch1_latency_s({"teacher": teacher_blob, "student": student_blob}, probe)
    return DistillReport(
        key=entry.key,
        version=entry.info.version,
        student=spec.text,
        teacher_params=int(source.model.count_params()),
        student_params=int(served.count_params()),
        teacher_bytes=len(teacher_blob),
        student_bytes=len(student_blob),
        teacher_latency_s=latency["teacher"],
        student_latency_s=latency["student"],
        trained=how,
        eval_source=test.source if test else None,
        accuracy_teacher=tflite_eval.accuracy(teacher_blob, test.x, test.y)
        if test and test.y is not None
        else None,
        accuracy_student=tflite_eval.accuracy(student_blob, test.x, test.y)
        if test and test.y is not None
        else None,
    )
