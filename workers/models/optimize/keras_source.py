"""A Keras classifier as the source of a derived variant (``prune``, ``distill``).

Pruning fine-tunes a model's weights and distillation trains a new model against it,
so both need the Keras model itself: a ``.tflite`` file or a SavedModel has no
trainable graph in Keras 3. SRC is a ``.keras`` (or legacy ``.h5``) file, or the name
of a model whose Keras source lies in the models folder
(``<models>/<name>/data/model.keras``, ``KERAS_SOURCE_FILE``, which
``build-examples`` keeps for digits).

Both commands serve what they make under the source's model name, so the source must
be a classifier with one input and one output of class scores (probabilities or
logits); anything else is refused here, before any training starts.

TensorFlow is imported only when a function here runs.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput, ModelNotFound
from tasks.keys import NAME_RE
from workers.models.examples import KERAS_SOURCE_FILE
from workers.models.optimize.errors import UnreadableModel
from workers.models.optimize.quiet import captured_output
from workers.models.optimize.source import KERAS_SUFFIXES
from workers.models.registry import Registry


def keras() -> Any:
    """Keras 3, on TensorFlow, with TensorFlow's start-up chatter kept off the terminal
    (written from C++ before its log level is read: a one-line error would get three)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with captured_output():
        import keras as k

    return k


@dataclass(frozen=True)
class KerasSource:
    """A loaded Keras classifier and what a variant made from it must match."""

    path: Path
    model: Any  # keras.Model
    #: The model it belongs to in the models folder, when SRC lies there (else None).
    name: str | None
    input_name: str
    input_shape: tuple[int, ...]  # without the batch axis
    classes: int
    #: Its output is softmax probabilities (else logits): decides the loss and how
    #: soft targets are read.
    outputs_probabilities: bool

    @property
    def output_struct(self) -> Any:
        """The output as the model declares it (a dict ``{"probs": t}`` or a tensor): a
        student built with the same structure exports the same output names."""
        return self.model.output

    def scores_model(self) -> Any:
        """The same layers with the one output as a plain tensor (what ``fit`` wants)."""
        k = keras()
        return k.Model(self.model.inputs, self.model.outputs[0])


def resolve_source(registry: Registry, src: str) -> tuple[Path, str | None]:
    """SRC's Keras file and the model name it belongs to (``None`` if it is outside the
    models folder). A plain name stands for ``<models>/<name>/data/model.keras``."""
    path = Path(src)
    if not path.exists() and NAME_RE.fullmatch(src):
        path = registry.data_dir(src) / KERAS_SOURCE_FILE
        if not path.is_file():
            raise ModelNotFound(
                f"{src!r} is neither a file nor a model with a Keras source ({path} does not exist); "
                "give the .keras file (inferq models build-examples keeps one for digits)"
            )
        return path, src
    if not path.exists():
        raise BadInput(f"{src} does not exist")
    if path.is_dir():
        what = "a SavedModel folder" if (path / "saved_model.pb").is_file() else "a folder"
        raise UnreadableModel(f"{src} is {what}, not a Keras model: this command needs the .keras file")
    if path.suffix not in KERAS_SUFFIXES:
        raise UnreadableModel(
            f"{src} is not a Keras model (expected a .keras or .h5 file, got {path.suffix or 'no suffix'})"
        )
    return path, _owner(registry, path)


def _owner(registry: Registry, path: Path) -> str | None:
    """``digits`` for ``<models>/digits/data/model.keras``; None outside the models folder."""
    root = registry.root.resolve()
    real = path.resolve()
    if root not in real.parents:
        return None
    name = real.relative_to(root).parts[0]
    return name if NAME_RE.fullmatch(name) else None


def load_classifier(registry: Registry, src: str) -> KerasSource:
    """Load SRC and check it is a one-input, one-output classifier; ``BadInput`` if not."""
    path, name = resolve_source(registry, src)
    k = keras()
    with captured_output():
        try:
            model = k.saving.load_model(path, compile=False)
            failure: Exception | None = None
        except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            failure = exc
    if failure is not None:
        first = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        raise UnreadableModel(f"{src} is not a loadable Keras model: {first}")
    if not isinstance(model, k.Model):
        raise UnreadableModel(f"{src} holds a {type(model).__name__}, not a keras.Model")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise BadInput(
            f"{src}: a subclassed model with no symbolic inputs; save a functional or Sequential model"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise BadInput(
            f"{src} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "prune and distill take a classifier with one input and one output"
        )
    in_shape = tuple(inputs[0].shape[1:])
    out_shape = tuple(outputs[0].shape[1:])
    if None in in_shape or len(out_shape) != 1 or out_shape[0] is None or out_shape[0] < 2:
        raise BadInput(
            f"{src}: input {in_shape} -> output {out_shape}; expected a fixed input shape and "
            "one vector of class scores"
        )
    return KerasSource(
        path=path,
        model=model,
        name=name,
        input_name=inputs[0].name,
        input_shape=tuple(int(d) for d in in_shape),
        classes=int(out_shape[0]),
        outputs_probabilities=_outputs_probabilities(model, tuple(int(d) for d in in_shape)),
    )


def _outputs_probabilities(model: Any, input_shape: tuple[int, ...]) -> bool:
    """Whether the scores are a softmax: rows in [0, 1] that sum to 1, on a few inputs.

    Read from the numbers rather than the last layer's name: a softmax can sit inside an
    ``Activation``, a ``Softmax`` layer, a ``Dense(activation=...)`` or an ``ops`` call.
    Logits meeting this on random inputs by chance would need every row to sum to 1.
    """
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(4, *input_shape)).astype(np.float32)
    scores = scores_of(model, x)
    return bool(np.all(scores >= 0) and np.all(scores <= 1) and np.allclose(scores.sum(-1), 1.0, atol=1e-3))


def scores_of(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The class scores of a one-output model, as a float32 array (n, classes)."""
    out = model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out, dtype=np.float32)


def tflite_bytes(model: Any, *, label: str) -> bytes:
    """A float32 ``.tflite`` of an in-memory Keras model, made the way ``convert`` makes
    fp32 (SavedModel export, then TensorFlow's converter, its chatter kept off the
    terminal), so a derived variant and the dense one it is compared with are made alike."""
    from workers.models.optimize.convert import tflite_from_savedmodel
    from workers.models.optimize.modes import Mode

    with tempfile.TemporaryDirectory(prefix="inferq-derived-") as tmp:
        saved = Path(tmp) / "saved_model"
        with captured_output():
            model.export(str(saved), format="tf_saved_model", verbose=False)
        return tflite_from_savedmodel(saved, Mode.FP32, None, label=label)
