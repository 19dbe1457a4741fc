"""The student of ``inferq models distill``: a small description, and the model it builds.

SPEC is a comma list of layers, in order, or a preset's name:

- ``conv:F``: a 3x3 convolution with F filters (ReLU, same padding), then 2x2 max pooling;
- ``pool:K``: KxK average pooling (cheap downsampling of inputs finer than their content);
- ``dense:N``: a fully connected layer of N units (ReLU); the first one flattens.

The classifier head (one unit per class) is added to every spec, with the teacher's
input name and output names and its kind of scores (probabilities or logits), so the
student is a drop-in variant: a client sends and reads the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.errors import BadInput

#: Named students. ``tiny`` suits digits-like inputs (28x28 images of 8x8 content).
PRESETS = {
    "tiny": "pool:2,conv:8,dense:32",
    "small": "conv:8,dense:32",
}
KINDS = ("conv", "pool", "dense")
#: Beyond this a "student" is no longer small, and a typo (dense:32000) costs an hour.
MAX_SIZE = 4096


@dataclass(frozen=True)
class StudentLayer:
    kind: str
    size: int


@dataclass(frozen=True)
class StudentSpec:
    text: str
    layers: tuple[StudentLayer, ...]


def parse_student(text: str) -> StudentSpec:
    """``"conv:8,dense:32"`` or a preset's name into layers; ``BadInput`` saying the form."""
    expanded = PRESETS.get(text.strip(), text)
    layers = []
    for item in expanded.split(","):
        kind, sep, size = item.strip().partition(":")
        if kind not in KINDS or not sep or not size.isdigit() or not 1 <= int(size) <= MAX_SIZE:
            raise BadInput(
                f"student spec {text!r} does not parse at {item.strip()!r}: expected a comma list of "
                f"conv:FILTERS, pool:SIZE and dense:UNITS (each 1-{MAX_SIZE}, e.g. conv:8,dense:32) "
                f"or a preset ({', '.join(PRESETS)})"
            )
        layers.append(StudentLayer(kind, int(size)))
    return StudentSpec(text=text.strip(), layers=tuple(layers))


def build_student(
    spec: StudentSpec, input_shape: tuple[int, ...], input_name: str, classes: int
) -> tuple[Any, Any]:
    """``(logits_model, head)``: the student up to its class logits, for training, and
    the logits tensor it ends in, for the caller to finish with the teacher's output form."""
    from workers.models.optimize.keras_source import keras

    k = keras()
    inp = k.Input(input_shape, name=input_name)
    h = inp
    for layer in spec.layers:
        if layer.kind in ("conv", "pool"):
            if len(h.shape) != 4:
                raise BadInput(
                    f"student spec {spec.text!r}: {layer.kind}:{layer.size} needs an image input "
                    f"(height, width, channels) with nothing flattened before it, got {tuple(h.shape[1:])}"
                )
            if min(h.shape[1], h.shape[2]) < (2 if layer.kind == "conv" else layer.size):
                raise BadInput(
                    f"student spec {spec.text!r}: the image is down to {tuple(h.shape[1:3])} at {layer.kind}"
                )
        if layer.kind == "conv":
            h = k.layers.Conv2D(layer.size, 3, padding="same", activation="relu")(h)
            h = k.layers.MaxPool2D()(h)
        elif layer.kind == "pool":
            h = k.layers.AveragePooling2D(layer.size)(h)
        else:
            if len(h.shape) > 2:
                h = k.layers.Flatten()(h)
            h = k.layers.Dense(layer.size, activation="relu")(h)
    if len(h.shape) > 2:
        h = k.layers.Flatten()(h)
    logits = k.layers.Dense(classes, name="logits")(h)
    return k.Model(inp, logits, name="student"), logits
