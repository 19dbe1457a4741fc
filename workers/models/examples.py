"""``inferq models build-examples``: example models made locally, with no download.

- ``digits``: a small CNN trained on scikit-learn's bundled 8x8 digits, resized to
  28x28x1, as SavedModel and TFLite fp32, fp16 and full-integer int8 (weights and
  activations, calibrated on the training split). The held-out split is kept as
  ``data/heldout_x.npy`` / ``data/heldout_y.npy`` for demos and accuracy tests; the
  training split (``data/train_x.npy`` / ``data/train_y.npy``) and the Keras model
  itself (``data/model.keras``) too, what ``prune`` and ``distill`` start from.
- ``mobilenet_v2``: Keras' MobileNetV2 architecture (``weights=None``, 224x224x3) as
  TFLite fp32 and int8: the realistic heavy model for speed work. Its weights are
  random, so its outputs mean nothing; its cost is real.

Needs TensorFlow (the ``tf`` extra); imported only by this command.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput
from tasks.schema import ModelInfo
from workers.models.registry import Registry

log = logging.getLogger(__name__)

EXAMPLES = ("digits", "mobilenet_v2")
#: The Keras model kept in ``data/``: the source ``inferq models prune`` and ``distill`` train from.
KERAS_SOURCE_FILE = "model.keras"
DIGITS_SIZE = 28


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def digits_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/held-out split of sklearn's digits as float32 28x28x1 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    tf = _tf()
    d = load_digits()
    x = d.images.astype(np.float32)[..., None] / 16.0
    x = tf.image.resize(x, (DIGITS_SIZE, DIGITS_SIZE)).numpy().astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def _export(model: Any, path: Path) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


def _convert(saved: Path, mode: str, rep: Callable[[], Iterator[list[np.ndarray]]] | None) -> bytes:
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if mode == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def _register_tflite(
    registry: Registry, name: str, variant: str, blob: bytes, tmp: Path, **meta: Any
) -> None:
    from workers.models.runtimes.litert import describe_tflite

    path = tmp / f"{name}-{variant}.tflite"
    path.write_bytes(blob)
    ins, outs = describe_tflite(path)
    info = ModelInfo(
        name=name, variant=variant, version="", runtime="litert", inputs=ins, outputs=outs, **meta
    )
    entry = registry.write(info, path, move=True)
    log.info("built %s (%d bytes)", entry.key, entry.info.size_bytes)


def build_digits(registry: Registry, *, epochs: int = 15, seed: int = 0) -> dict[str, float]:
    """Train, export and convert ``digits``; returns held-out accuracy of the Keras model."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    x_tr, y_tr, x_te, y_te = digits_data(seed)
    layers = tf.keras.layers
    inp = tf.keras.Input((DIGITS_SIZE, DIGITS_SIZE, 1), name="image")
    h = layers.Conv2D(16, 3, activation="relu", padding="same")(inp)
    h = layers.MaxPool2D()(h)
    h = layers.Conv2D(32, 3, activation="relu", padding="same")(h)
    h = layers.MaxPool2D()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(64, activation="relu")(h)
    probs = layers.Dense(10, activation="softmax", name="probs")(h)
    model = tf.keras.Model(inp, {"probs": probs})
    model.compile("adam", {"probs": "sparse_categorical_crossentropy"}, metrics={"probs": "accuracy"})
    model.fit(x_tr, {"probs": y_tr}, epochs=epochs, batch_size=32, verbose=0)
    pred = model.predict(x_te, verbose=0)["probs"].argmax(1)
    acc = float((pred == y_te).mean())
    log.info("digits: held-out accuracy %.4f", acc)

    meta: dict[str, Any] = {
        "labels": tuple(str(i) for i in range(10)),
        "max_batch_size": 64,
        "max_wait_ms": 2.0,
    }

    def rep() -> Iterator[list[np.ndarray]]:
        for i in range(0, 300):
            yield [x_tr[i : i + 1]]

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        saved = tmp / "saved_model"
        _export(model, saved)
        for variant in ("fp32", "fp16", "int8"):
            _register_tflite(registry, "digits", variant, _convert(saved, variant, rep), tmp, **meta)
        from workers.models.runtimes.tensorflow import describe_savedmodel

        ins, outs = describe_savedmodel(saved)
        info = ModelInfo(
            name="digits",
            variant="savedmodel",
            version="",
            runtime="tensorflow",
            inputs=ins,
            outputs=outs,
            **meta,
        )
        registry.write(info, saved, move=True)
    data = registry.data_dir("digits")
    data.mkdir(parents=True, exist_ok=True)
    np.save(data / "heldout_x.npy", x_te)
    np.save(data / "heldout_y.npy", y_te)
    np.save(data / "train_x.npy", x_tr)
    np.save(data / "train_y.npy", y_tr)
    model.save(data / KERAS_SOURCE_FILE)
    return {"keras_accuracy": acc}


def build_mobilenet_v2(registry: Registry, *, calibration_samples: int = 8, seed: int = 0) -> None:
    """MobileNetV2 (random weights) at 224x224x3, TFLite fp32 and int8."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((224, 224, 3), name="image")
    base = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    model = tf.keras.Model(inp, {"probs": base(inp)})
    rng = np.random.default_rng(seed)
    calib = rng.uniform(-1, 1, size=(calibration_samples, 1, 224, 224, 3)).astype(np.float32)

    def rep() -> Iterator[list[np.ndarray]]:
        for x in calib:
            yield [x]

    meta: dict[str, Any] = {"max_batch_size": 8, "max_wait_ms": 5.0}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        saved = tmp / "saved_model"
        _export(model, saved)
        for variant in ("fp32", "int8"):
            _register_tflite(registry, "mobilenet_v2", variant, _convert(saved, variant, rep), tmp, **meta)


def build_examples(models_dir: Path, only: list[str] | None = None, force: bool = False) -> list[str]:
    """Build the example models that are missing (all of them with ``force``)."""
    unknown = [name for name in only or () if name not in EXAMPLES]
    if unknown:  # all checked before anything is built: a typo costs no half-hour of training
        raise BadInput(f"--only takes {', '.join(EXAMPLES)} (comma-separated); got {', '.join(unknown)}")
    registry = Registry(models_dir)
    built = []
    for name in only or EXAMPLES:
        if not force and (models_dir / name).is_dir() and any((models_dir / name).glob("*/meta.json")):
            log.info("%s already built in %s (use --force to rebuild)", name, models_dir)
            continue
        if name == "digits":
            build_digits(registry)
        else:
            build_mobilenet_v2(registry)
        built.append(name)
    return built
