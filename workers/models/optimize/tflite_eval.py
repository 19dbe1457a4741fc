"""What prune and distill report about the ``.tflite`` files they make.

Every figure is measured on the exported file under LiteRT, the way a worker serves it,
not on the Keras model it came from: the converter may fold, fuse or reorder, and
the served file is what a user pays for.
"""

from __future__ import annotations

import gzip
import statistics
import time
from typing import Any

import numpy as np

from workers.models.optimize.quiet import captured_output
from workers.models.runtimes.litert import interpreter_class

#: Batch size for accuracy runs: large enough to amortise each invoke, small enough that
#: a big held-out set does not allocate one huge tensor.
EVAL_BATCH = 64


#: TFLite's schema code for a float32 tensor (``TensorType.FLOAT32``).
_FLOAT32 = 0


def _interpreter(blob: bytes, threads: int = 1) -> Any:
    with captured_output():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        return interpreter_class()(model_content=blob, num_threads=threads)


class _Runner:
    """One interpreter fed float32 inputs, whatever the file's own tensor types."""

    def __init__(self, blob: bytes, threads: int = 1) -> None:
        self.interp = _interpreter(blob, threads)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.batch = -1

    def _resize(self, n: int) -> None:
        if n != self.batch:
            self.interp.resize_tensor_input(self.inp["index"], [n, *self.inp["shape"][1:]])
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.out = self.interp.get_output_details()[0]
            self.batch = n

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._resize(len(x))
        scale, zero = self.inp["quantization"]
        if scale:
            x = np.clip(np.round(x / scale + zero), -128, 127)
        self.interp.set_tensor(self.inp["index"], x.astype(self.inp["dtype"]))
        self.interp.invoke()
        y = np.asarray(self.interp.get_tensor(self.out["index"]), dtype=np.float32)
        scale, zero = self.out["quantization"]
        return (y - zero) * scale if scale else y


def top1(blob: bytes, x: np.ndarray) -> np.ndarray:
    """The class each input is given by the ``.tflite`` model in ``blob``."""
    run = _Runner(blob)
    return np.concatenate([run(x[i : i + EVAL_BATCH]).argmax(-1) for i in range(0, len(x), EVAL_BATCH)])


def accuracy(blob: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the ``.tflite`` model in ``blob`` on labelled inputs."""
    return float((top1(blob, x) == y).mean())


def batch1_latency_s(
    blobs: dict[str, bytes], x: np.ndarray, *, rounds: int = 20, per_round: int = 50, threads: int = 1
) -> dict[str, float]:
    """Median seconds per input at batch 1 for each model, measured in alternation.

    Each call is timed whole (set the input, invoke, read the output: what a worker pays
    per input at batch 1). The models take turns round by round, so a neighbour's load on
    a shared machine falls on all of them alike rather than on whichever ran last.
    """
    runners = {name: _Runner(blob, threads) for name, blob in blobs.items()}
    times: dict[str, list[float]] = {name: [] for name in blobs}
    for run in runners.values():  # first invokes set up XNNPACK's workspace: not timed
        for i in range(5):
            run(x[i % len(x) : i % len(x) + 1])
    for r in range(rounds):
        for name, run in runners.items():
            for i in range(per_round):
                j = (r * per_round + i) % len(x)
                one = x[j : j + 1]
                t0 = time.perf_counter()
                run(one)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def weight_sparsity(blob: bytes) -> tuple[int, int]:
    """(zeros, total) over the float32 weights stored in the file: constant tensors of
    rank >= 2 (conv and dense kernels; biases left out), read from the flatbuffer itself
    rather than from an interpreter, whose delegate may hold repacked copies."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    zeros = total = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data if tensor.buffer else None
            if data is None or tensor.type != _FLOAT32 or tensor.shape is None or len(tensor.shape) < 2:
                continue
            w = np.frombuffer(bytes(data), dtype="<f4")
            zeros += int(np.count_nonzero(w == 0))
            total += int(w.size)
    return zeros, total


def gzip_size(blob: bytes) -> int:
    """Bytes after gzip at its best level: how sparsity shows in a download or an image
    layer (a dense ``.tflite`` keeps every zero as four bytes)."""
    return len(gzip.compress(blob, compresslevel=9, mtime=0))
