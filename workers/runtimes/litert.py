"""LiteRT (TFLite) runtime: one interpreter per worker process, XNNPACK threads.

Uses ``ai_edge_litert`` and falls back to ``tflite_runtime`` only where that imports
(its last release crashes under numpy 2). For quantized tensors the runtime converts
between the client's logical float values and the tensor's integers with the
tensor's own scale and zero point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import ConfigError
from tasks.schema import ModelInfo, TensorSpec
from workers.registry import ModelEntry


def interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ConfigError(
                "no TFLite interpreter: install the worker extra (pip install 'inferq[worker]')"
            ) from None
    return Interpreter


def _clean(name: str) -> str:
    # Tensor names like "serving_default_image:0" when a model has no signature.
    name = name.split(":")[0]
    return name.removeprefix("serving_default_")


def _tensor_details(interp: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """name -> tensor details for inputs and outputs, by signature name when there is one."""
    signatures = interp.get_signature_list()
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interp.get_signature_runner(key)
        return runner.get_input_details(), runner.get_output_details()
    ins = {_clean(d["name"]): d for d in interp.get_input_details()}
    outs = {_clean(d["name"]): d for d in interp.get_output_details()}
    return ins, outs


def _spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    shape_sig = [int(s) for s in detail.get("shape_signature", detail["shape"])]
    tensor_dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = tensor_dtype in ("int8", "uint8", "int16") and scale not in (0, 0.0)
    return TensorSpec(
        name=name,
        shape=tuple(None if s < 0 else s for s in shape_sig[1:]),
        dtype="float32" if quantized else tensor_dtype,
        tensor_dtype=tensor_dtype,
        quantization=(float(scale), int(zero_point)) if quantized else None,
    )


def describe_tflite(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs read from a ``.tflite`` file itself."""
    try:
        interp = interpreter_class()(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path}: not a loadable TFLite model ({exc})") from None
    ins, outs = _tensor_details(interp)
    return (
        tuple(_spec(n, d) for n, d in ins.items()),
        tuple(_spec(n, d) for n, d in outs.items()),
    )


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    assert spec.quantization is not None
    scale, zero_point = spec.quantization
    info = np.iinfo(np.dtype(spec.tensor_dtype))
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(spec.tensor_dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    assert spec.quantization is not None
    scale, zero_point = spec.quantization
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


class LiteRTRuntime:
    """A TFLite model in one interpreter. Not thread-safe, by LiteRT's design."""

    def __init__(self, entry: ModelEntry, threads: int) -> None:
        self.info: ModelInfo = entry.info
        self.path = entry.path
        try:
            self._interp = interpreter_class()(model_path=str(entry.path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"{entry.path}: cannot load TFLite model ({exc})") from None
        ins, outs = _tensor_details(self._interp)
        missing = [s.name for s in self.info.inputs if s.name not in ins] + [
            s.name for s in self.info.outputs if s.name not in outs
        ]
        if missing:
            raise ConfigError(f"{entry.path}: meta.json names tensors the file lacks: {missing}")
        self._in = [(s, int(ins[s.name]["index"])) for s in self.info.inputs]
        self._out = [(s, int(outs[s.name]["index"])) for s in self.info.outputs]
        self._shapes: dict[int, tuple[int, ...]] = {
            idx: tuple(int(d) for d in ins[s.name]["shape"]) for s, idx in self._in
        }

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self._interp
        # Re-allocating tensors is costly, so only when a batch shape changes.
        resized = False
        for spec, idx in self._in:
            shape = inputs[spec.name].shape
            if self._shapes[idx] != shape:
                interp.resize_tensor_input(idx, list(shape), strict=False)
                self._shapes[idx] = shape
                resized = True
        if resized:
            interp.allocate_tensors()
        for spec, idx in self._in:
            x = inputs[spec.name]
            if spec.quantization is not None:
                x = quantize(x, spec)
            interp.set_tensor(idx, np.ascontiguousarray(x))
        interp.invoke()
        out: dict[str, np.ndarray] = {}
        for spec, idx in self._out:
            y = interp.get_tensor(idx)
            out[spec.name] = dequantize(y, spec) if spec.quantization is not None else y.copy()
        return out
