"""Quantize a ``.tflite`` file alone, with the LiteRT quantizer (``litert-quantizer``).

For a model whose source (SavedModel, Keras) is not at hand. Recipes, by mode:

- dynamic-int8: ``dynamic_wi8_afp32``, int8 weights per channel, activations quantized
  at run time by the kernels;
- weight-only: ``weight_only_wi8_afp32``, int8 weights dequantized before a float
  computation (the smallest accuracy loss, no speed gain);
- int8: ``static_wi8_ai8``, int8 weights and activations, calibrated;
- int16x8: ``static_wi8_ai16``, int16 activations, calibrated;
- fp16: float16 weights (the quantizer's float casting on the ops that hold weights).

The dynamic, weight-only and fp16 recipes keep the model's float inputs and outputs;
the static ones (int8, int16x8) make them integers too (int8, int16), each with its
scale and zero point, which the worker applies: clients send and receive the same
float values whatever the variant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput, ConfigError
from tasks.schema import TensorSpec
from workers.models.optimize.errors import ConversionFailed, UnreadableModel, UnsupportedOps
from workers.models.optimize.modes import Mode
from workers.models.optimize.quiet import captured_output

#: The ops whose weights the quantizer's float casting (fp16) handles.
FP16_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")


def check_tflite(path: Path) -> tuple[TensorSpec, ...]:
    """The file's inputs, after proving LiteRT can load *and* allocate it.

    Allocation is where a file with Select TF ("Flex") or custom ops fails: without it a
    model that no worker could run would be quantized and registered.
    """
    from workers.models.runtimes.litert import describe_tflite, interpreter_class

    try:
        ins, _ = describe_tflite(path)
    except ConfigError as exc:
        raise UnreadableModel(str(exc)) from None
    with captured_output() as chatter:
        try:
            interpreter_class()(model_path=str(path)).allocate_tensors()
            failure: Exception | None = None
        except (RuntimeError, ValueError) as exc:
            failure = exc
    if failure is not None:
        text = f"{failure}\n{chatter.text}"
        ops = sorted({w for w in text.replace("'", " ").replace(",", " ").split() if w.startswith("Flex")})
        if ops or "Select TensorFlow op" in text or "custom op" in text.lower():
            named = ", ".join(ops) or "Select TF or custom ops"
            raise UnsupportedOps(
                f"{path} uses ops LiteRT's builtin kernels lack ({named}); inferq's workers cannot "
                "run it, so it is not quantized"
            )
        raise UnreadableModel(f"{path}: LiteRT cannot allocate its tensors ({_one_line(str(failure))})")
    if any(s.quantization for s in ins):
        raise BadInput(
            f"{path} is already quantized (its inputs are {', '.join(s.tensor_dtype for s in ins)}); "
            "convert from the float model"
        )
    return ins


def quantize_tflite(path: Path, mode: Mode, samples: Sequence[dict[str, np.ndarray]] | None = None) -> bytes:
    """The quantized model's bytes; ``samples`` are needed for int8 and int16x8."""
    from litert_quantizer import quantizer as aeq

    if mode is Mode.FP32:
        raise BadInput(f"{path} is already a float TFLite model: register it with `inferq models add`")
    qt = aeq.Quantizer(str(path))
    _load_recipe(qt, mode)
    with captured_output() as chatter:
        try:
            calibration = None
            if qt.need_calibration:
                if not samples:
                    raise ConversionFailed(f"--to {mode.value} needs calibration samples")
                calibration = qt.calibrate(
                    {_signature_key(path): list(samples)}, num_threads=max(1, os.cpu_count() or 1)
                )
            result = qt.quantize(calibration, enable_progress_report=False)
            failure: Exception | None = None
        except ConversionFailed:
            raise
        except Exception as exc:  # the quantizer raises ValueError, RuntimeError, KeyError alike
            failure = exc
    if failure is not None:
        text = f"{type(failure).__name__}: {failure}"
        if "not supported" in text.lower() or "unsupported" in text.lower():
            raise UnsupportedOps(
                f"{path}: the LiteRT quantizer cannot do --to {mode.value}: {_one_line(text)}"
            )
        raise ConversionFailed(
            f"{path}: the LiteRT quantizer failed for --to {mode.value}: {_one_line(text or chatter.text)}"
        )
    if not result.quantized_model:
        raise ConversionFailed(f"{path}: the LiteRT quantizer returned no model for --to {mode.value}")
    return bytes(result.quantized_model)


def _load_recipe(qt: Any, mode: Mode) -> None:
    from litert_quantizer import qtyping, recipe

    recipes = {
        Mode.DYNAMIC_INT8: recipe.dynamic_wi8_afp32,
        Mode.WEIGHT_ONLY: recipe.weight_only_wi8_afp32,
        Mode.INT8: recipe.static_wi8_ai8,
        Mode.INT16X8: recipe.static_wi8_ai16,
    }
    if mode in recipes:
        qt.load_quantization_recipe(recipes[mode]())
        return
    # fp16: no ready recipe; float casting, op by op (it refuses ops without weights).
    for op in FP16_OPS:
        qt.update_quantization_recipe(
            regex=".*",
            operation_name=qtyping.TFLOperationName[op],
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                ),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
            algorithm_key="float_casting",
        )


def _signature_key(path: Path) -> str:
    from workers.models.runtimes.litert import interpreter_class

    signatures = interpreter_class()(model_path=str(path)).get_signature_list()
    if not signatures:
        raise ConversionFailed(
            f"{path} has no signature; the quantizer calibrates a model by its signature's inputs"
        )
    return "serving_default" if "serving_default" in signatures else str(next(iter(signatures)))


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
