"""workers/models/runtimes/litert.py: quantize/dequantize arithmetic, and import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.schema import TensorSpec
from workers.models.runtimes.litert import _clean, _spec, dequantize, quantize

ROOT = Path(__file__).resolve().parents[2]


def qspec(scale: float, zero_point: int, tensor_dtype: str = "int8") -> TensorSpec:
    return TensorSpec(
        name="x", shape=(None,), dtype="float32", tensor_dtype=tensor_dtype, quantization=(scale, zero_point)
    )


@st.composite
def quantized_case(draw):
    tensor_dtype = draw(st.sampled_from(["int8", "uint8"]))
    info = np.iinfo(tensor_dtype)
    scale = draw(st.floats(min_value=1e-4, max_value=10.0))
    zero_point = draw(st.integers(min_value=int(info.min), max_value=int(info.max)))
    lo, hi = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    values = draw(st.lists(st.floats(min_value=lo, max_value=hi), min_size=1, max_size=32))
    # Rounding to float32 may step a hair past lo/hi: still within half a step of the range.
    return qspec(scale, zero_point, tensor_dtype), np.asarray(values, dtype=np.float32)


@settings(max_examples=200, deadline=None)
@given(case=quantized_case())
def test_round_trip_error_is_at_most_half_a_step_within_range(case):
    spec, x = case
    scale = spec.quantization[0]
    q = quantize(x, spec)
    assert q.dtype == np.dtype(spec.tensor_dtype)
    back = dequantize(q, spec)
    assert back.dtype == np.float32
    err = np.abs(back.astype(np.float64) - x.astype(np.float64))
    # Half a quantization step, plus float32 rounding in x / scale and the dequantize product.
    assert err.max() <= scale / 2 * (1 + 1e-3) + 1e-6


def test_quantize_known_values():
    spec = qspec(0.5, -10)
    q = quantize(np.array([0.0, 0.5, -0.5, 1.2, 10.0], dtype=np.float32), spec)
    assert q.tolist() == [-10, -9, -11, -8, 10]
    np.testing.assert_array_equal(dequantize(q, spec), [0.0, 0.5, -0.5, 1.0, 10.0])


def test_values_beyond_the_range_clip_at_int8_bounds():
    spec = qspec(0.1, 0)
    q = quantize(np.array([1e6, 12.8, 12.7, -12.8, -12.9, -1e6], dtype=np.float32), spec)
    assert q.dtype == np.int8
    assert q.tolist() == [127, 127, 127, -128, -128, -128]
    np.testing.assert_allclose(dequantize(q, spec), [12.7, 12.7, 12.7, -12.8, -12.8, -12.8], rtol=1e-6)


def test_values_beyond_the_range_clip_at_uint8_bounds():
    spec = qspec(1 / 255, 0, "uint8")
    q = quantize(np.array([-0.5, 0.0, 1.0, 2.0], dtype=np.float32), spec)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 0, 255, 255]


def test_dequantize_uses_the_zero_point():
    spec = qspec(0.25, 3)
    assert dequantize(np.array([3, 7, -1], dtype=np.int8), spec).tolist() == [0.0, 1.0, -1.0]


def test_tensor_names_lose_the_signature_prefix_and_port():
    assert _clean("serving_default_image:0") == "image"
    assert _clean("logits") == "logits"


def test_spec_from_tensor_details_marks_quantized_int8_as_float32_logical():
    detail = {
        "shape": np.array([1, 28, 28, 1]),
        "shape_signature": np.array([-1, 28, 28, 1]),
        "dtype": np.int8,
        "quantization": (0.0039, -128),
    }
    spec = _spec("image", detail)
    assert spec == TensorSpec(
        name="image", shape=(28, 28, 1), dtype="float32", tensor_dtype="int8", quantization=(0.0039, -128)
    )


def test_spec_from_float_tensor_details_has_no_quantization_and_keeps_dynamic_dims():
    detail = {"shape": np.array([1, 5]), "shape_signature": np.array([-1, -1]), "dtype": np.float32}
    spec = _spec("seq", detail)
    assert spec == TensorSpec(name="seq", shape=(None,), dtype="float32", tensor_dtype="float32")


def test_importing_producer_and_litert_modules_does_not_import_tensorflow():
    code = (
        "import workers.models.runtimes.litert, producers.client, tasks, sys; "
        "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_importing_litert_module_does_not_load_the_interpreter():
    code = (
        "import workers.models.runtimes.litert, sys; "
        "bad = [m for m in sys.modules if m.startswith(('ai_edge_litert', 'tflite_runtime'))]; "
        "assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_zero_maps_to_the_zero_point(dtype):
    zp = -5 if dtype == "int8" else 128
    assert quantize(np.zeros(3, dtype=np.float32), qspec(0.02, zp, dtype)).tolist() == [zp] * 3
