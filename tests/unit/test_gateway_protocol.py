"""The Open Inference Protocol codec (gateway/protocol.py, gateway/matching.py): pure, no server."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway import matching
from gateway.protocol import (
    DATATYPES,
    datatype_of,
    decode_request,
    encode_response,
    parse_header_length,
)
from gateway.response_reader import decode_response
from tasks.errors import BadInput
from tasks.schema import ModelInfo, TensorSpec

INFO = ModelInfo(
    name="m",
    variant="fp32",
    version="1",
    runtime="litert",
    inputs=(TensorSpec("x", (2, None), "float32"), TensorSpec("k", (), "int32")),
    outputs=(TensorSpec("y", (3,), "float32"), TensorSpec("z", (), "int64")),
)


def binary_request(tensors: list[tuple[str, str, np.ndarray]], **params: object) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {"name": n, "datatype": dt, "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
            for n, dt, a in tensors
        ],
        "parameters": params,
    }
    head = orjson.dumps(header)
    return head + b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for _, _, a in tensors), len(head)


def json_request(**doc: object) -> bytes:
    return orjson.dumps(doc)


def test_datatype_names_round_trip_every_supported_dtype():
    for name, dtype in DATATYPES.items():
        assert datatype_of(dtype) == name
    assert datatype_of(np.dtype(">f4")) == "FP32"
    with pytest.raises(ValueError):
        datatype_of(np.dtype("U3"))


@settings(max_examples=60)
@given(
    dtype=st.sampled_from(sorted(DATATYPES)),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4),
    data=st.data(),
)
def test_binary_tensors_decode_to_the_arrays_sent(dtype, shape, data):
    arr = data.draw(hnp.arrays(DATATYPES[dtype], shape))
    body, n = binary_request([("a", dtype, arr)])
    (t,) = decode_request(body, n).inputs
    assert t.array.dtype == DATATYPES[dtype] and t.array.shape == arr.shape
    np.testing.assert_array_equal(t.array, arr)


@settings(max_examples=60)
@given(
    dtype=st.sampled_from(sorted(DATATYPES)),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
    data=st.data(),
    binary=st.booleans(),
)
def test_responses_round_trip_as_json_or_binary(dtype, shape, data, binary):
    elements = hnp.from_dtype(DATATYPES[dtype], allow_nan=False, allow_infinity=False)
    arr = data.draw(hnp.arrays(DATATYPES[dtype], shape, elements=elements))
    encoded = encode_response({"model_name": "m", "model_version": "v"}, [("out", arr, binary)])
    assert encoded.media_type == ("application/octet-stream" if binary else "application/json")
    doc, arrays = decode_response(encoded.body, encoded.header_length)
    assert doc["outputs"][0]["datatype"] == dtype and doc["outputs"][0]["shape"] == list(arr.shape)
    np.testing.assert_array_equal(arrays["out"], arr)


def test_json_data_may_be_flat_or_nested_and_is_cast_safely():
    flat = json_request(inputs=[{"name": "x", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}])
    nested = json_request(
        inputs=[{"name": "x", "shape": [1, 2, 2], "datatype": "FP32", "data": [[[1, 2], [3, 4]]]}]
    )
    a, b = decode_request(flat, None).inputs[0].array, decode_request(nested, None).inputs[0].array
    assert a.dtype == np.float32 and a.shape == (1, 2, 2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("inp", "named"),
    [
        ({"datatype": "INT8", "data": [1.5, 2]}, "whole numbers"),
        ({"datatype": "INT8", "data": [300, 2]}, "range"),
        ({"datatype": "FP16", "data": [1e6, 0]}, "range"),
        ({"datatype": "BOOL", "data": [1, 0]}, "true/false"),
        ({"datatype": "FP32", "data": [1, 2, 3]}, "needs 2 values, got 3"),
        ({"datatype": "FP32", "data": [[1], [2, 3]]}, "rectangular"),
        ({"datatype": "FP32", "data": [{"a": 1}, 2]}, "needs numbers"),
        ({"datatype": "STRING", "data": [1, 2]}, "FP32"),
        ({"datatype": "FP32"}, "expected data"),
    ],
)
def test_json_inputs_that_do_not_fit_are_bad_input(inp, named):
    body = json_request(inputs=[{"name": "x", "shape": [1, 2], **inp}])
    with pytest.raises(BadInput, match=named):
        decode_request(body, None)


def test_binary_sizes_must_match_the_shape_and_the_body():
    arr = np.zeros((1, 2), np.float32)
    body, n = binary_request([("x", "FP32", arr)])
    with pytest.raises(BadInput, match="runs past"):
        decode_request(body[:-1], n)
    with pytest.raises(BadInput, match="add up to"):
        decode_request(body + b"\0", n)
    head = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 8}}
            ]
        }
    )
    with pytest.raises(BadInput, match="12 bytes"):
        decode_request(head + arr.tobytes(), len(head))
    with pytest.raises(BadInput, match="Inference-Header-Content-Length"):
        parse_header_length("-1", 10)
    with pytest.raises(BadInput, match="Inference-Header-Content-Length"):
        parse_header_length("11", 10)


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "9" * 5000])
def test_a_header_length_that_is_not_a_plain_number_is_bad_input(value):
    """Digits int() refuses (a superscript is a digit to str.isdigit) or cannot read
    (past Python's 4300-digit limit) are a 400 naming the header, never a ValueError."""
    with pytest.raises(BadInput, match="Inference-Header-Content-Length"):
        parse_header_length(value, 10)


def test_a_huge_declared_shape_allocates_nothing():
    """A declared shape is checked against the bytes sent before any array is made."""
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP64",
                    "shape": [10**9, 10**9],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    with pytest.raises(BadInput, match="binary_data_size says 8"):
        decode_request(head + b"\0" * 8, len(head))


def test_output_flags_per_output_win_over_the_request_flag():
    body = json_request(
        inputs=[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
        parameters={"binary_data_output": True},
        outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    )
    req = decode_request(body, None)
    assert (req.wants_binary("y"), req.wants_binary("z")) == (False, True)
    classify = json_request(
        inputs=[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
        outputs=[{"name": "y", "parameters": {"classification": 3}}],
    )
    with pytest.raises(BadInput, match="classification"):
        decode_request(classify, None)


def _request(x: np.ndarray, k: np.ndarray, *, x_type: str = "FP32", k_type: str = "INT32"):
    return decode_request(
        json_request(
            inputs=[
                {"name": "x", "shape": list(x.shape), "datatype": x_type, "data": x.reshape(-1).tolist()},
                {"name": "k", "shape": list(k.shape), "datatype": k_type, "data": k.reshape(-1).tolist()},
            ]
        ),
        None,
    )


def test_a_batch_of_n_is_n_rows_per_input_and_dynamic_dims_pass():
    x = np.arange(3 * 2 * 5, dtype=np.float32).reshape(3, 2, 5)
    columns = matching.request_columns(_request(x, np.array([1, 2, 3])), INFO)
    assert set(columns) == {"x", "k"} and len(columns["x"]) == len(columns["k"]) == 3
    np.testing.assert_array_equal(columns["x"][1], x[1])
    assert columns["k"][2] == 3 and columns["k"].dtype == np.int32


@pytest.mark.parametrize(
    ("x", "k", "kw", "named"),
    [
        (
            np.zeros((2, 5)),
            np.array([1]),
            {},
            "shape [-1, 2, -1]; got datatype 'FP32', shape [2, 5] (the first",
        ),
        (np.zeros((1, 3, 5)), np.array([1]), {}, "expected datatype FP32, shape [-1, 2, -1]"),
        (np.zeros((1, 2, 5)), np.array([1]), {"x_type": "FP64"}, "got datatype 'FP64'"),
        (np.zeros((2, 2, 5)), np.array([1]), {}, "batch dimension 1, but other inputs have 2"),
    ],
)
def test_inputs_that_do_not_fit_the_model_name_the_expected_form(x, k, kw, named):
    with pytest.raises(BadInput) as err:
        matching.request_columns(_request(x, k, **kw), INFO)
    assert named in str(err.value)


def test_missing_or_unknown_inputs_and_outputs_are_named():
    req = decode_request(
        json_request(inputs=[{"name": "q", "shape": [1], "datatype": "FP32", "data": [1]}]), None
    )
    with pytest.raises(
        BadInput, match=r"expected inputs 'x' \(datatype FP32, shape \[-1, 2, -1\]\); 'k'.*got 'q'"
    ):
        matching.request_columns(req, INFO)
    req = decode_request(
        json_request(
            inputs=[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], outputs=[{"name": "w"}]
        ),
        None,
    )
    with pytest.raises(BadInput, match="outputs among 'y', 'z'; got 'w'"):
        matching.output_names(req, INFO)
