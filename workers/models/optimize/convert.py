"""TFLite from a SavedModel or Keras model, with TensorFlow's ``TFLiteConverter``.

Modes (``modes.Mode``): fp32 (plain), fp16 (float16 weights), dynamic-int8 (int8
weights, activations quantized per call), int8 (full integer: weights, activations and
the model's inputs and outputs, calibrated on sample inputs, as the example models'
int8 variants are) and int16x8 (int16 activations, int8 weights, calibrated; float
inputs and outputs). Weight-only has no TensorFlow converter mode: ``make`` converts
to fp32 here and hands the file to the LiteRT quantizer.

A Keras file is exported to a temporary SavedModel first (Keras 3's ``export``), so
both sources go through the same, signature-based converter path: the TFLite file keeps
the signature's input and output names, which the worker serves by.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ConfigError
from tasks.schema import TensorSpec
from workers.models.optimize.errors import ConversionFailed, UnreadableModel, UnsupportedOps
from workers.models.optimize.modes import Mode
from workers.models.optimize.quiet import captured_output
from workers.models.optimize.source import Source, SourceKind


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


@contextlib.contextmanager
def savedmodel_of(source: Source) -> Iterator[Path]:
    """The source as a SavedModel folder: itself, or a Keras file exported to a temporary one."""
    if source.kind is SourceKind.SAVEDMODEL:
        yield source.path
        return
    if source.kind is not SourceKind.KERAS:
        raise ConversionFailed(f"{source.label}: TensorFlow's converter needs a SavedModel or Keras model")
    with tempfile.TemporaryDirectory(prefix="inferq-keras-") as tmp:
        with captured_output() as chatter:
            tf = _tf()  # imported in here: its start-up chatter is captured too
            try:
                model = tf.keras.models.load_model(str(source.path), compile=False)
                model.export(str(Path(tmp) / "saved_model"), format="tf_saved_model", verbose=False)
                failure: Exception | None = None
            except (ValueError, OSError, TypeError, KeyError, zipfile.BadZipFile) as exc:
                failure = exc
        if failure is not None:
            raise UnreadableModel(
                f"{source.path}: not a loadable Keras model ({_first_line(str(failure) or chatter.text)})"
            )
        yield Path(tmp) / "saved_model"


def savedmodel_inputs(path: Path) -> tuple[TensorSpec, ...]:
    """The serving signature's inputs; ``UnreadableModel`` for a folder TensorFlow cannot load."""
    from workers.models.runtimes.tensorflow import describe_savedmodel

    with captured_output() as chatter:
        try:
            ins, _ = describe_savedmodel(path)
            failure: Exception | None = None
        except ConfigError as exc:
            failure = exc
        except Exception as exc:  # a corrupt saved_model.pb: protobuf's DecodeError and kin
            failure = exc
    if failure is not None:
        raise UnreadableModel(
            f"{path}: not a loadable SavedModel ({_first_line(str(failure) or chatter.text)})"
        )
    return ins


def tflite_from_savedmodel(
    saved: Path, mode: Mode, samples: Sequence[dict[str, np.ndarray]] | None, *, label: str
) -> bytes:
    """Convert a SavedModel's serving signature to TFLite in ``mode``."""
    if mode is Mode.WEIGHT_ONLY:
        raise ConversionFailed("weight-only is made by the LiteRT quantizer from an fp32 TFLite file")
    tf = _tf()
    with captured_output() as chatter:
        try:
            conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            _configure(tf, conv, mode, samples)
            blob = bytes(conv.convert())
            failure: Exception | None = None
        except Exception as exc:  # the converter raises its own ConverterError and plain ones
            failure = exc
    if failure is not None:
        raise converter_error(f"{failure}\n{chatter.text}", label=label, mode=mode)
    return blob


def _configure(tf: Any, conv: Any, mode: Mode, samples: Sequence[dict[str, np.ndarray]] | None) -> None:
    if mode is Mode.FP32:
        return
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Mode.FP16:
        conv.target_spec.supported_types = [tf.float16]
        return
    if mode is Mode.DYNAMIC_INT8:
        return  # DEFAULT without a representative dataset: dynamic range quantization
    if not samples:
        raise ConversionFailed(f"--to {mode.value} needs calibration samples")

    def representative() -> Iterator[dict[str, np.ndarray]]:
        # Keyed by the signature's input names: the calibrator feeds them by name.
        yield from samples

    conv.representative_dataset = representative
    if mode is Mode.INT8:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif mode is Mode.INT16X8:
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]


#: Op names in the converter's messages: ``tf.Svd``, ``'tf.Svd'``, ``FlexSvd``.
_TF_OP = re.compile(r"\btf\.([A-Z][A-Za-z0-9_]*)")
_NO_INT_KERNEL = re.compile(
    r"(?:Quantization not yet supported for op|not supported for op)[:\s]+'?([\w.]+)'?"
)


def converter_error(text: str, *, label: str, mode: Mode) -> Exception:
    """The converter's failure as one of our errors, naming the ops when it names any."""
    no_int = sorted(set(_NO_INT_KERNEL.findall(text)))
    if no_int and mode in (Mode.INT8, Mode.INT16X8):
        return UnsupportedOps(
            f"{label}: ops with no {mode.value} kernel: {', '.join(no_int)}; "
            "try --to dynamic-int8 or fp16, which keep float activations"
        )
    ops = sorted(set(_TF_OP.findall(text)))
    lowered = text.lower()
    if ops and any(w in lowered for w in ("not supported", "legalize", "flex op", "custom op")):
        return UnsupportedOps(
            f"{label} uses TensorFlow ops that TFLite has no builtin kernel for: {', '.join(ops)}; "
            "inferq's LiteRT workers run builtin ops only (no Select TF ops): express them with other ops"
        )
    return ConversionFailed(
        f"{label}: TensorFlow's converter failed for --to {mode.value}: {_first_line(text)}"
    )


def _first_line(text: str, limit: int = 300) -> str:
    """The first line that says something, cut to ``limit`` characters (messages stay one line)."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("W0000", "I0000", "WARNING:", "Traceback")):
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return "no message"
