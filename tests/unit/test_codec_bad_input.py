"""Codec: every malformed payload is refused as BadInput (or PayloadTooLarge), and fuzzing finds nothing else."""

from __future__ import annotations

import re
import time
import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.codec import (
    decode_array,
    decode_inputs,
    encode_inputs,
)
from tasks.errors import BadInput, PayloadTooLarge

MAX = 1 << 20


def tagged(dtype: str, shape: list, data: bytes) -> dict:
    return {"x": {"dtype": dtype, "shape": shape, "data": data}}


# --- bad payloads ---------------------------------------------------------------------------


def test_non_msgpack_bytes_are_refused_as_bad_input():
    with pytest.raises(BadInput, match=r"not valid msgpack.*expected a map of name"):
        decode_inputs(b"\xc1\xc1\xc1 this is not msgpack", max_bytes=MAX)


def test_truncated_msgpack_is_refused_as_bad_input():
    blob = encode_inputs({"x": np.zeros(16, dtype=np.float32)})
    with pytest.raises(BadInput, match="not valid msgpack"):
        decode_inputs(blob[: len(blob) // 2], max_bytes=MAX)


def test_trailing_garbage_after_msgpack_is_refused():
    blob = encode_inputs({"x": np.zeros(2, dtype=np.float32)})
    with pytest.raises(BadInput, match="not valid msgpack"):
        decode_inputs(blob + b"\x00", max_bytes=MAX)


def test_payload_over_max_bytes_is_refused_with_both_sizes_in_the_message():
    assert issubclass(PayloadTooLarge, BadInput)
    blob = encode_inputs({"x": np.zeros(64, dtype=np.float32)})
    with pytest.raises(PayloadTooLarge, match=rf"is {len(blob)} bytes, over the limit of 100 bytes"):
        decode_inputs(blob, max_bytes=100)


def test_payload_exactly_at_max_bytes_is_accepted():
    blob = encode_inputs({"x": np.zeros(4, dtype=np.float32)})
    out = decode_inputs(blob, max_bytes=len(blob))
    np.testing.assert_array_equal(out["x"], np.zeros(4, dtype=np.float32))


def test_declared_array_size_over_max_bytes_is_refused_in_a_mapping():
    data = np.zeros(100, dtype=np.float32).tobytes()
    with pytest.raises(
        PayloadTooLarge, match=r"shape \[100\] of float32 needs 400 bytes, over the limit of 399"
    ):
        decode_inputs(tagged("<f4", [100], data), max_bytes=399)


def test_wrong_byte_count_for_declared_shape_names_needed_and_got():
    data = np.zeros(5, dtype=np.float32).tobytes()
    with pytest.raises(BadInput, match=r"shape \[2, 3\] of float32 needs 24 bytes, got 20 bytes"):
        decode_inputs(tagged("<f4", [2, 3], data), max_bytes=MAX)


def test_too_many_bytes_for_declared_shape_is_refused():
    with pytest.raises(BadInput, match="needs 4 bytes, got 8 bytes"):
        decode_inputs(tagged("<f4", [1], b"\x00" * 8), max_bytes=MAX)


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [
        ("O", "O"),
        ("<U3", "U"),
        ("S4", "S"),
        ("f4,i4", "V"),
        ("c8", "c"),
        ("M8[D]", "M"),
        ("m8[s]", "m"),
    ],
)
def test_non_numeric_dtypes_are_refused_naming_the_dtype(dtype, kind):
    want = re.escape(f"dtype must be bool, int, uint or float, got '{dtype}' ('{kind}' kind)")
    with pytest.raises(BadInput, match=want):
        decode_inputs(tagged(dtype, [1], b"\x00" * 16), max_bytes=MAX)


def test_structured_dtype_from_json_list_form_is_refused():
    # "f4," parses as a one-field structured dtype: a record, not a tensor.
    with pytest.raises(BadInput, match="dtype must be bool, int, uint or float"):
        decode_inputs(tagged("f4,", [1], b"\x00" * 4), max_bytes=MAX)


def test_sub_array_dtype_is_refused():
    with pytest.raises(BadInput, match="dtype must be bool, int, uint or float"):
        decode_inputs(tagged("(2,)f4", [1], b"\x00" * 8), max_bytes=MAX)


def test_unknown_dtype_name_is_refused():
    with pytest.raises(BadInput, match=r"unknown dtype 'float33'"):
        decode_inputs(tagged("float33", [1], b"\x00" * 4), max_bytes=MAX)


@pytest.mark.parametrize("raw", [None, 4, ["<f4"]])
def test_dtype_that_is_not_a_string_is_refused(raw):
    with pytest.raises(BadInput, match="'dtype' must be a string like 'float32'"):
        decode_inputs(tagged(raw, [1], b"\x00" * 4), max_bytes=MAX)


@pytest.mark.parametrize("raw", ["(-1,)f4", "(1000000000,1000000000)f4", "10000000000000000000000f4"])
def test_malformed_sub_array_dtype_string_is_refused_as_bad_input(raw):
    with pytest.raises(BadInput, match="dtype"):
        decode_inputs(tagged(raw, [1], b"\x00" * 4), max_bytes=MAX)


@pytest.mark.parametrize("shape", [[0], [2, 0], [-1], [3, -2], [1.5], ["2"], [True], [None]])
def test_non_positive_or_non_integer_dims_are_refused(shape):
    with pytest.raises(BadInput, match="every dimension must be a positive integer"):
        decode_inputs(tagged("<f4", shape, b""), max_bytes=MAX)


@pytest.mark.parametrize("shape", [None, 3, "3", {"a": 1}, [1] * 9])
def test_shape_that_is_not_a_short_list_is_refused(shape):
    with pytest.raises(BadInput, match="'shape' must be a list of at most 8 dimensions"):
        decode_inputs(tagged("<f4", shape, b"\x00" * 4), max_bytes=MAX)


def test_declared_shape_of_billions_is_refused_before_allocating():
    payload = msgpack.packb(tagged("<f4", [100_000, 100_000, 100], b"\x00" * 16), use_bin_type=True)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(PayloadTooLarge, match=r"needs 4000000000000 bytes, over the limit of 1048576"):
            decode_inputs(payload, max_bytes=MAX)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20


def test_declared_shape_of_billions_with_base64_is_refused_as_too_large():
    payload = {"x": {"dtype": "float64", "shape": [10**9, 10**9], "b64": "AAAA"}}
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        decode_inputs(payload, max_bytes=MAX)


def test_ragged_nested_list_is_refused():
    with pytest.raises(BadInput, match="nested list is ragged"):
        decode_inputs({"x": [[1.0, 2.0], [3.0]]}, max_bytes=MAX)


def test_ragged_nested_list_in_msgpack_is_refused():
    with pytest.raises(BadInput, match="nested list is ragged"):
        decode_inputs(msgpack.packb({"x": [[1, 2], 3]}), max_bytes=MAX)


@pytest.mark.parametrize("value", [[["a", "b"], ["c", "d"]], [1.0, "2"], [b"ab"]])
def test_strings_in_nested_list_are_refused(value):
    with pytest.raises(
        BadInput, match="expected numbers in a rectangular nested list, got elements of dtype"
    ):
        decode_inputs({"x": value}, max_bytes=MAX)


@pytest.mark.parametrize("value", [[None, 1.0], [{"a": 1}], [2**64]])
def test_nested_list_of_non_numbers_becoming_object_dtype_is_refused(value):
    with pytest.raises(BadInput, match="got elements of dtype object"):
        decode_inputs({"x": value}, max_bytes=MAX)


def test_nested_list_deeper_than_numpy_allows_is_refused():
    value: list = [1.0]
    for _ in range(80):
        value = [value]
    with pytest.raises(BadInput, match="input 'x'"):
        decode_inputs({"x": value}, max_bytes=MAX)


def test_nested_list_over_max_bytes_is_refused():
    with pytest.raises(PayloadTooLarge, match=r"800 bytes, over the limit of 100"):
        decode_inputs({"x": [0.0] * 100}, max_bytes=100)


@pytest.mark.parametrize("b64", ["not base64!!", "AAA", "AAAA AA==", "=AAA"])
def test_invalid_base64_is_refused(b64):
    with pytest.raises(BadInput, match="'b64' is not valid base64"):
        decode_inputs({"x": {"dtype": "uint8", "shape": [3], "b64": b64}}, max_bytes=MAX)


def test_base64_string_longer_than_the_limit_allows_is_refused_before_decoding():
    with pytest.raises(BadInput, match="'b64' must be a base64 string within the size limit"):
        decode_inputs({"x": {"dtype": "uint8", "shape": [3], "b64": "A" * 1000}}, max_bytes=30)


def test_base64_that_is_not_a_string_is_refused():
    with pytest.raises(BadInput, match="'b64' must be a base64 string"):
        decode_inputs({"x": {"dtype": "uint8", "shape": [3], "b64": b"AAAA"}}, max_bytes=MAX)


def test_data_that_is_not_bytes_is_refused():
    with pytest.raises(BadInput, match="'data' must be bytes, got a string of 3 characters"):
        decode_inputs({"x": {"dtype": "uint8", "shape": [3], "data": "abc"}}, max_bytes=MAX)


def test_tagged_array_without_data_or_b64_is_refused():
    with pytest.raises(BadInput, match="expected a 'data' \\(bytes\\) or 'b64' field, got neither"):
        decode_inputs({"x": {"dtype": "uint8", "shape": [3]}}, max_bytes=MAX)


@pytest.mark.parametrize("payload", [{}, msgpack.packb({})])
def test_empty_map_is_refused(payload):
    with pytest.raises(BadInput, match=re.escape("non-empty map of name -> array, got an empty map")):
        decode_inputs(payload, max_bytes=MAX)


@pytest.mark.parametrize(
    ("obj", "got"),
    [
        ([1, 2], "a list of 2 items"),
        (3, "a value of type int"),
        ("x", "a string of 1 characters"),
        (None, "None"),
    ],
)
def test_msgpack_that_is_not_a_map_is_refused_naming_what_came(obj, got):
    with pytest.raises(BadInput, match=re.escape(f"non-empty map of name -> array, got {got}")):
        decode_inputs(msgpack.packb(obj), max_bytes=MAX)


def test_non_string_key_in_a_mapping_is_refused():
    with pytest.raises(BadInput, match="input names must be strings, got int"):
        decode_inputs({1: [1.0]}, max_bytes=MAX)


def test_non_string_key_in_msgpack_is_refused():
    blob = msgpack.packb({1: {"dtype": "<f4", "shape": [1], "data": b"\x00" * 4}}, use_bin_type=True)
    with pytest.raises(BadInput, match="not valid msgpack"):
        decode_inputs(blob, max_bytes=MAX)


@pytest.mark.parametrize("payload", [None, 42, "text", [1, 2]])
def test_payload_that_is_neither_bytes_nor_mapping_is_refused(payload):
    with pytest.raises(
        BadInput, match=rf"msgpack bytes or a mapping of name -> array, got {type(payload).__name__}"
    ):
        decode_inputs(payload, max_bytes=MAX)


@pytest.mark.parametrize("value", [1, "abc", None, 2.5])
def test_input_value_that_is_neither_tagged_nor_list_is_refused(value):
    with pytest.raises(BadInput, match=r"input 'x': expected \{dtype, shape, data\} or a nested list"):
        decode_array(value, name="x", max_bytes=MAX)


@pytest.mark.parametrize(
    "payload",
    [
        {"x": {"dtype": "<f4", "shape": [28, "SECRET-1"], "data": b""}},
        {"x": {"dtype": ["SECRET-3"], "shape": [1], "data": b""}},
        {"x": {"dtype": "<f4", "shape": "SECRET-4", "data": b""}},
        {"x": {"dtype": "<f4", "shape": [1], "data": "SECRET-5"}},
        {"x": [3_000_000_123, 4]},
        {"x": [[1.5, 2.5], ["SECRET-6", 1.0]]},
        {"x": "SECRET" * 1000},
    ],
)
def test_error_messages_never_echo_input_values(payload):
    with pytest.raises(BadInput) as info:
        decode_inputs(payload, max_bytes=MAX)
    text = str(info.value)
    assert "SECRET" not in text and "3000000123" not in text and "2.5" not in text
    assert len(text) < 200


@pytest.mark.parametrize("payload", [{"n" * 10_000: "x"}, tagged("n" * 10_000, [1], b"")])
def test_long_input_names_and_dtype_strings_are_shortened_in_messages(payload):
    with pytest.raises(BadInput) as info:
        decode_inputs(payload, max_bytes=MAX)
    assert f"'{'n' * 40}'... (10000 characters)" in str(info.value)
    assert len(str(info.value)) < 200


# --- fuzzing --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        # Start with a valid one-entry map header so the fuzz reaches decode_array.
        st.binary(max_size=200).map(lambda b: b"\x81\xa1x" + b),
    )
)
def test_decoding_arbitrary_bytes_raises_only_bad_input(payload):
    try:
        out = decode_inputs(payload, max_bytes=256)
    except BadInput:  # PayloadTooLarge included
        return
    assert isinstance(out, dict)
    assert out
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in out.items())


msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)

msgpack_values = st.recursive(
    st.none() | st.booleans() | msgpack_ints | st.floats() | st.text(max_size=8) | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)

tagged_values = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["<f4", "float32", "int8", "u1", "?", "O", "<U3", "f4,i4", "c8", "nope"])
        | msgpack_ints
        | st.none(),
        "shape": st.lists(st.integers(min_value=-3, max_value=10**12), max_size=10) | msgpack_values,
    },
    optional={"data": st.binary(max_size=64) | msgpack_values, "b64": st.text(max_size=16)},
)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(msgpack_values, tagged_values))
def test_decoding_arbitrary_msgpack_structures_raises_only_bad_input(value):
    blob = msgpack.packb({"x": value}, use_bin_type=True)
    try:
        out = decode_inputs(blob, max_bytes=1024)
    except BadInput:
        return
    assert out["x"].dtype.kind in "biuf"
    assert out["x"].nbytes <= 1024
