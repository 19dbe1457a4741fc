"""tasks/codec.py: exact round trips, and defensive decoding of untrusted payloads."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tasks.codec import (
    array_from_json,
    array_to_json,
    decode_inputs,
    encode_array,
    encode_inputs,
)
from tasks.errors import BadInput

MAX = 1 << 20

ROUND_TRIP_DTYPES = [np.float32, np.float64, np.int8, np.uint8, np.int32, np.bool_]

arrays = st.sampled_from(ROUND_TRIP_DTYPES).flatmap(
    lambda dt: hnp.arrays(dtype=dt, shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=8))
)


def tagged(dtype: str, shape: list, data: bytes) -> dict:
    return {"x": {"dtype": dtype, "shape": shape, "data": data}}


def assert_same_array(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    # Byte comparison: exact, and NaN payloads compare equal to themselves.
    assert got.tobytes() == np.ascontiguousarray(want).tobytes()


# --- round trips -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(arr=arrays)
def test_round_trip_through_msgpack_is_exact_for_every_numeric_dtype_and_shape(arr):
    out = decode_inputs(encode_inputs({"x": arr}), max_bytes=MAX)
    assert list(out) == ["x"]
    assert_same_array(out["x"], arr)


@settings(max_examples=50, deadline=None)
@given(a=arrays, b=arrays)
def test_round_trip_keeps_every_named_input(a, b):
    out = decode_inputs(encode_inputs({"image": a, "mask": b}), max_bytes=MAX)
    assert sorted(out) == ["image", "mask"]
    assert_same_array(out["image"], a)
    assert_same_array(out["mask"], b)


def test_fortran_ordered_and_strided_arrays_round_trip_as_the_same_logical_values():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    for arr in (np.asfortranarray(base), base[:, ::2], base.T, base[::-1]):
        out = decode_inputs(encode_inputs({"x": arr}), max_bytes=MAX)["x"]
        np.testing.assert_array_equal(out, arr)
        assert out.shape == arr.shape


def test_encode_array_writes_dtype_string_shape_and_c_order_bytes():
    arr = np.asfortranarray(np.array([[1, 2], [3, 4]], dtype=np.int32))
    enc = encode_array(arr)
    assert enc["dtype"] == np.dtype(np.int32).str
    assert enc["shape"] == [2, 2]
    assert enc["data"] == np.array([1, 2, 3, 4], dtype=np.int32).tobytes()


def test_decode_accepts_bytearray_and_memoryview_payloads():
    arr = np.array([1.5, -2.5], dtype=np.float32)
    blob = encode_inputs({"x": arr})
    for payload in (bytearray(blob), memoryview(blob)):
        np.testing.assert_array_equal(decode_inputs(payload, max_bytes=MAX)["x"], arr)


def test_json_mapping_with_base64_decodes_to_the_declared_dtype_and_shape():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    payload = {"x": {"dtype": "float32", "shape": [2, 3], "b64": base64.b64encode(arr.tobytes()).decode()}}
    out = decode_inputs(payload, max_bytes=MAX)["x"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr)


def test_nested_float_list_becomes_float32():
    out = decode_inputs({"x": [[0.5, 1.0], [2.0, 3.25]]}, max_bytes=MAX)["x"]
    assert out.dtype == np.float32
    assert out.shape == (2, 2)
    np.testing.assert_array_equal(out, np.array([[0.5, 1.0], [2.0, 3.25]], dtype=np.float32))


def test_nested_int_list_becomes_int32_and_bool_list_stays_bool():
    ints = decode_inputs({"x": [1, -2, 3]}, max_bytes=MAX)["x"]
    assert ints.dtype == np.int32
    assert ints.tolist() == [1, -2, 3]
    bools = decode_inputs({"x": [True, False]}, max_bytes=MAX)["x"]
    assert bools.dtype == np.bool_
    assert bools.tolist() == [True, False]


def test_nested_int_list_outside_int32_range_is_refused_not_wrapped():
    with pytest.raises(BadInput, match="int32"):
        decode_inputs({"x": [2**40, 1]}, max_bytes=MAX)


def test_tagged_scalar_with_empty_shape_decodes_to_a_zero_dimensional_array():
    out = decode_inputs(tagged("<f4", [], np.float32(2.5).tobytes()), max_bytes=MAX)["x"]
    assert out.shape == ()
    assert out.item() == 2.5


def test_zero_dimensional_input_round_trips_as_a_scalar():
    out = decode_inputs(encode_inputs({"x": np.array(2.5, dtype=np.float32)}), max_bytes=MAX)["x"]
    assert out.shape == ()
    assert out.item() == 2.5


def test_array_to_json_keeps_a_zero_dimensional_shape():
    obj = array_to_json(np.array(1.5, dtype=np.float32))
    assert obj["shape"] == []
    assert array_from_json(obj).shape == ()


def test_array_to_json_round_trips_through_array_from_json():
    arr = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    obj = array_to_json(arr)
    assert obj["dtype"] == "float32"
    assert obj["shape"] == [3, 4]
    assert_same_array(array_from_json(obj), arr)


def test_array_to_json_of_a_big_endian_array_decodes_to_the_same_values():
    arr = np.array([1.0, 2.0, 3.0], dtype=">f4")
    np.testing.assert_array_equal(array_from_json(array_to_json(arr)), [1.0, 2.0, 3.0])
