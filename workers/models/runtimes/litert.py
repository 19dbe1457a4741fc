"""LiteRT (TFLite) runtime: one interpreter per worker process, XNNPACK threads.

Uses ``ai_edge_litert`` and falls back to ``tflite_runtime`` only where that imports
(its last release crashes under numpy 2). For quantized tensors the runtime converts
between the client's logical float values and the tensor's integers with the
tensor's own scale and zero point.

Which batch sizes a model call runs (the ``resize`` and ``pad`` policies, the compute
batch) and why: ``batch_sizes.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput, ConfigError
from tasks.schema import ModelInfo, TensorSpec
from workers.models.registry import ModelEntry
from workers.models.runtimes.batch_sizes import (
    BATCH_POLICIES,
    CALIBRATION_CALLS,
    CALIBRATION_MIN_S,
    bucket_for,
    bucket_sizes,
    choose_compute_batch,
)


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
    """A TFLite model in one interpreter per batch shape. Not thread-safe, by LiteRT's design."""

    def __init__(self, entry: ModelEntry, threads: int, batch_policy: str = "resize") -> None:
        if batch_policy not in BATCH_POLICIES:
            raise ConfigError(f"batch_policy must be one of {BATCH_POLICIES}, got {batch_policy!r}")
        self.info: ModelInfo = entry.info
        self.path = entry.path
        self.threads = threads
        self.batch_policy = batch_policy
        self.max_bucket = max(1, self.info.max_batch_size)
        self.allocations = 0  # allocate_tensors calls, over every interpreter
        #: The most rows one model call runs (``calibrate_compute_batch``); None: any.
        self.compute_batch: int | None = None
        #: What ``calibrate_compute_batch`` measured: batch size -> seconds per input.
        self.calibration: dict[int, float] = {}
        try:
            interp = self._new_interpreter()
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"{entry.path}: cannot load TFLite model ({exc})") from None
        ins, outs = _tensor_details(interp)
        missing = [s.name for s in self.info.inputs if s.name not in ins] + [
            s.name for s in self.info.outputs if s.name not in outs
        ]
        if missing:
            raise ConfigError(f"{entry.path}: meta.json names tensors the file lacks: {missing}")
        # Tensor indices are the same in every interpreter built from this file.
        self._in = [(s, int(ins[s.name]["index"])) for s in self.info.inputs]
        self._out = [(s, int(outs[s.name]["index"])) for s in self.info.outputs]
        self._shapes: dict[int, tuple[int, ...]] = {
            idx: tuple(int(d) for d in ins[s.name]["shape"]) for s, idx in self._in
        }
        # Pad policy: (bucket size, non-batch shape of each input) -> allocated interpreter.
        self._buckets: dict[tuple[int, tuple[tuple[int, ...], ...]], Any] = {}
        try:
            if batch_policy == "pad":
                rest = self._file_rest()
                self._resize(interp, 1, rest)
                self._allocate(interp)
                self._buckets[(1, rest)] = interp
            else:
                self._allocate(interp)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"{entry.path}: cannot allocate TFLite tensors ({exc})") from None
        self._interp = interp

    @property
    def buckets(self) -> list[int]:
        """Bucket sizes created so far (pad policy; empty for resize)."""
        return sorted({b for b, _ in self._buckets})

    def warmup(self, max_batch_size: int) -> None:
        """Allocate (and run once) what batches up to ``max_batch_size`` will need.

        Pad: every bucket up to the one that holds ``max_batch_size``, so no real batch
        pays for creating one; a ``max_batch_size`` above the model's own raises the
        largest bucket to it (the worker was told to form batches that large). Resize:
        one allocation at ``max_batch_size`` (the arena keeps its largest size); later
        shape changes still re-allocate.
        """
        n = max(1, int(max_batch_size))
        if any(None in s.shape for s, _ in self._in):
            return  # dynamic dims: no shape to guess, and a made-up one may not even run
        if self.batch_policy == "resize":
            zeros = {s.name: np.zeros((n, *self._shapes[idx][1:]), s.dtype) for s, idx in self._in}
            self._predict_resize(zeros)
            return
        self.max_bucket = max(self.max_bucket, n)
        rest = self._file_rest()
        top = bucket_for(n, self.max_bucket)
        for b in bucket_sizes(self.max_bucket):
            if b > top:
                break
            fresh = (b, rest) not in self._buckets
            interp = self._bucket(b, rest)
            if fresh:  # the first invoke also sets up XNNPACK's workspace
                for (spec, idx), r in zip(self._in, rest, strict=True):
                    fill = spec.quantization[1] if spec.quantization is not None else 0
                    interp.set_tensor(idx, np.full((b, *r), fill, spec.tensor_dtype))
                interp.invoke()

    def calibrate_compute_batch(self, max_batch_size: int) -> int | None:
        """Time one call per input at batch 1, 2, 4, ... up to ``max_batch_size`` and make
        the largest size within ``COMPUTE_BATCH_TOLERANCE`` of the fastest the most rows
        one model call runs. Returns it; None (no limit) for dynamic non-batch dims."""
        n = max(1, int(max_batch_size))
        if any(None in s.shape for s, _ in self._in):
            return None
        rng = np.random.default_rng(0)
        self.compute_batch = None  # time each size as itself, not in chunks
        timings: dict[int, float] = {}
        for b in bucket_sizes(n):
            x = {
                s.name: rng.uniform(-1, 1, (b, *self._shapes[idx][1:])).astype(s.dtype)
                if np.dtype(s.dtype).kind == "f"
                else np.zeros((b, *self._shapes[idx][1:]), s.dtype)
                for s, idx in self._in
            }
            self.predict(x)  # the first call at a size sets up its buffers: not timed
            fastest, calls, t0 = float("inf"), 0, time.perf_counter()
            while calls < CALIBRATION_CALLS or time.perf_counter() - t0 < CALIBRATION_MIN_S:
                c0 = time.perf_counter()
                self.predict(x)
                fastest = min(fastest, time.perf_counter() - c0)
                calls += 1
            timings[b] = fastest / b
        self.calibration = timings
        self.compute_batch = choose_compute_batch(timings)
        if self.batch_policy == "resize":  # leave the interpreter at the size it will run
            self.predict({k: v[: self.compute_batch] for k, v in x.items()})
        return self.compute_batch

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = self._batch_size(inputs)
        c = self.compute_batch
        if c is not None and n > c:
            parts = [self.predict({k: v[i : i + c] for k, v in inputs.items()}) for i in range(0, n, c)]
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        if self.batch_policy == "resize":
            return self._predict_resize(inputs)
        if n <= self.max_bucket:
            return self._predict_bucket(inputs, n)
        parts = [
            self._predict_bucket(
                {k: v[i : i + self.max_bucket] for k, v in inputs.items()}, min(self.max_bucket, n - i)
            )
            for i in range(0, n, self.max_bucket)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    # -- resize policy -------------------------------------------------------------

    def _predict_resize(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self._interp
        # Re-plan the tensors only when a batch shape changes (with XNNPACK, a reshape: cheap).
        resized = False
        for spec, idx in self._in:
            shape = inputs[spec.name].shape
            if self._shapes[idx] != shape:
                interp.resize_tensor_input(idx, list(shape), strict=False)
                self._shapes[idx] = shape
                resized = True
        if resized:
            self._allocate(interp)
        for spec, idx in self._in:
            x = inputs[spec.name]
            if spec.quantization is not None:
                x = quantize(x, spec)
            interp.set_tensor(idx, np.ascontiguousarray(x))
        interp.invoke()
        return self._outputs(interp, None)

    # -- pad policy ----------------------------------------------------------------

    def _predict_bucket(self, inputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        b = bucket_for(n, self.max_bucket)
        rest = tuple(tuple(inputs[s.name].shape[1:]) for s, _ in self._in)
        interp = self._bucket(b, rest)
        for spec, idx in self._in:
            x = inputs[spec.name]
            fill = 0
            if spec.quantization is not None:
                # Quantize the real rows; pad rows get the quantized zero (the zero point).
                x = quantize(x, spec)
                fill = spec.quantization[1]
            if b > n:
                padded = np.full((b, *x.shape[1:]), fill, dtype=x.dtype)
                padded[:n] = x
                x = padded
            interp.set_tensor(idx, np.ascontiguousarray(x))
        interp.invoke()
        return self._outputs(interp, n if n < b else None)

    def _bucket(self, b: int, rest: tuple[tuple[int, ...], ...]) -> Any:
        key = (b, rest)
        interp = self._buckets.get(key)
        if interp is None:
            interp = self._new_interpreter()
            self._resize(interp, b, rest)
            self._allocate(interp)
            self._buckets[key] = interp
        return interp

    # -- shared --------------------------------------------------------------------

    def _new_interpreter(self) -> Any:
        return interpreter_class()(model_path=str(self.path), num_threads=self.threads)

    def _allocate(self, interp: Any) -> None:
        interp.allocate_tensors()
        self.allocations += 1

    def _file_rest(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self._shapes[idx][1:] for _, idx in self._in)

    def _resize(self, interp: Any, b: int, rest: tuple[tuple[int, ...], ...]) -> None:
        for (_, idx), r in zip(self._in, rest, strict=True):
            interp.resize_tensor_input(idx, [b, *r], strict=False)

    def _batch_size(self, inputs: dict[str, np.ndarray]) -> int:
        sizes = {inputs[s.name].shape[0] for s, _ in self._in}
        if len(sizes) != 1:
            raise BadInput(f"{self.info.key}: inputs must share the batch axis, got sizes {sorted(sizes)}")
        return int(sizes.pop())

    def _outputs(self, interp: Any, n: int | None) -> dict[str, np.ndarray]:
        """Logical outputs; only the first ``n`` rows when ``n`` is given (pad rows dropped)."""
        out: dict[str, np.ndarray] = {}
        for spec, idx in self._out:
            y = interp.get_tensor(idx)  # already a copy of the tensor
            if n is not None:
                y = y[:n]
            if spec.quantization is not None:
                out[spec.name] = dequantize(y, spec)
            else:
                out[spec.name] = y.copy() if n is not None else y
        return out
