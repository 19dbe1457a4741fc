"""Property-based tests of the codec, validation, job ids and message parsing.

They complement the examples in test_codec.py, test_codec_bad_input.py (which already
fuzz ``decode_inputs`` with arbitrary bytes and msgpack structures), test_validation.py
and test_keys.py: here the properties are about exactness (every dtype and byte order,
bit for bit), about what a corrupted *valid* payload can turn into, about messages that
name both what was expected and what came, and about the worker's parsing stages,
which must refuse anything with their own error type and never crash.
"""

from __future__ import annotations

import base64
import json

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tasks.codec import decode_inputs, encode_inputs
from tasks.errors import BadInput, InferqError
from tasks.keys import job_id
from tasks.schema import ModelInfo, TensorSpec
from tasks.validation import validate_inputs
from workers.broker.envelope import Rejected, parse_message
from workers.serving.pipeline import Pipeline, Prepared

MAX = 1 << 16
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMERIC = [
    f"{order}{code}" for order in "<>" for code in ("f2", "f4", "f8", "i2", "i4", "i8", "u2", "u4", "u8")
]
NUMERIC += ["i1", "u1", "b1"]
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6)


@st.composite
def raw_arrays(draw: st.DrawFn) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype string, shape, raw bytes): any bit pattern, so NaN payloads and -0.0 too."""
    dtype, shape = np.dtype(draw(st.sampled_from(NUMERIC))), draw(shapes)
    n = int(np.prod(shape)) * dtype.itemsize
    data = draw(st.binary(min_size=n, max_size=n))
    if dtype.kind == "b":  # a bool is one byte of 0 or 1
        data = bytes(b & 1 for b in data)
    return dtype.str, shape, data


def native_bytes(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    """The bytes a decoded (native byte order) array must hold: a pure byte swap."""
    dt = np.dtype(dtype)
    arr = np.frombuffer(data, dt).reshape(shape)
    return arr.tobytes() if dt.isnative else arr.byteswap().tobytes()


@FAST
@given(raw=raw_arrays(), form=st.sampled_from(["msgpack", "json-b64"]))
def test_tagged_arrays_decode_bit_for_bit_in_every_numeric_dtype_and_byte_order(raw, form):
    dtype, shape, data = raw
    if form == "msgpack":
        payload = msgpack.packb({"x": {"dtype": dtype, "shape": list(shape), "data": data}})
    else:  # what a JSON producer sends, through a real JSON round trip
        doc = {"x": {"dtype": dtype, "shape": list(shape), "b64": base64.b64encode(data).decode()}}
        payload = json.loads(json.dumps(doc))
    out = decode_inputs(payload, max_bytes=MAX)["x"]
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    assert out.shape == shape
    assert out.tobytes() == native_bytes(dtype, shape, data)


@FAST
@given(
    arr=st.sampled_from([np.float32, np.int32, np.bool_]).flatmap(
        lambda dt: hnp.arrays(
            dt,
            hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
            elements={"allow_nan": False, "allow_infinity": False} if dt is np.float32 else None,
        )
    )
)
def test_nested_lists_of_float32_int32_and_bool_decode_to_the_same_array(arr):
    out = decode_inputs(json.loads(json.dumps({"x": arr.tolist()})), max_bytes=MAX)["x"]
    assert out.dtype == arr.dtype
    assert out.tobytes() == arr.tobytes()  # -0.0 and subnormals included


@st.composite
def valid_blobs(draw: st.DrawFn) -> tuple[bytes, np.ndarray]:
    dtype, shape, data = draw(raw_arrays())
    arr = np.frombuffer(data, dtype).reshape(shape)
    return encode_inputs({"x": arr}), arr.astype(arr.dtype.newbyteorder("="))


@FAST
@given(valid=valid_blobs(), cut=st.floats(0, 1, exclude_max=True))
def test_every_truncation_of_a_valid_payload_is_refused_as_bad_input(valid, cut):
    blob, _ = valid
    with pytest.raises(BadInput, match="not valid msgpack"):
        decode_inputs(blob[: int(len(blob) * cut)], max_bytes=MAX)


@FAST
@given(valid=valid_blobs(), extra=st.binary(min_size=1, max_size=16))
def test_bytes_after_a_valid_payload_are_refused_as_bad_input(valid, extra):
    with pytest.raises(BadInput, match="not valid msgpack"):
        decode_inputs(valid[0] + extra, max_bytes=MAX)


@FAST
@given(valid=valid_blobs(), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_a_flipped_byte_changes_only_that_byte_of_the_data_or_is_refused_as_bad_input(valid, where, mask):
    blob, arr = valid  # encode_inputs writes native byte order
    pos, mutated = int(len(blob) * where), bytearray(blob)
    mutated[pos] ^= mask
    data_start = len(blob) - arr.nbytes  # 'data' is the map's last field: raw bytes at the end
    try:
        out = decode_inputs(bytes(mutated), max_bytes=MAX)
    except BadInput:
        assert pos < data_start  # the data bytes themselves are only counted, never judged
        return
    if pos >= data_start:
        want = bytearray(arr.tobytes())
        want[pos - data_start] ^= mask
        assert (out["x"].dtype, out["x"].shape, out["x"].tobytes()) == (arr.dtype, arr.shape, bytes(want))
    else:  # a changed header may still describe an array: then a sound one
        assert all(a.dtype.kind in "biuf" and a.nbytes <= MAX for a in out.values())


# --- validation ------------------------------------------------------------------------

SPEC_DTYPES = ["float32", "float16", "int8", "uint8", "int32", "bool"]


@st.composite
def spec_and_array(draw: st.DrawFn) -> tuple[TensorSpec, np.ndarray]:
    dims = draw(st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=0, max_size=4))
    spec = TensorSpec(
        name=draw(st.text("abcxyz_", min_size=1, max_size=8)),
        shape=tuple(dims),
        dtype=draw(st.sampled_from(SPEC_DTYPES)),
    )
    shape = tuple(d if d is not None else draw(st.integers(1, 5)) for d in dims)
    elements = {"allow_nan": False, "allow_infinity": False} if spec.dtype.startswith("float") else None
    return spec, draw(hnp.arrays(np.dtype(spec.dtype), shape, elements=elements))


@FAST
@given(case=spec_and_array())
def test_any_array_matching_its_spec_is_accepted_unchanged(case):
    spec, arr = case
    out = validate_inputs({spec.name: arr}, [spec])
    assert out[spec.name] is arr


@FAST
@given(case=spec_and_array(), other=st.sampled_from([*SPEC_DTYPES, "float64", "int64", "uint16"]))
def test_a_wrong_dtype_is_refused_naming_the_expected_and_the_got_dtype(case, other):
    spec, arr = case
    assume(other != spec.dtype)
    with pytest.raises(BadInput, match=f"expected dtype {spec.dtype}, got {other}"):
        validate_inputs({spec.name: np.zeros(arr.shape, other)}, [spec])


def shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@FAST
@given(case=spec_and_array(), change=st.sampled_from(["add", "drop", "resize"]), size=st.integers(1, 7))
def test_a_wrong_shape_is_refused_naming_the_expected_and_the_got_shape(case, change, size):
    spec, arr = case
    fixed = [i for i, d in enumerate(spec.shape) if d is not None]
    if change == "add":
        shape = (size, *arr.shape)
    elif change == "drop":
        assume(arr.ndim > 0)
        shape = arr.shape[1:]
    else:
        assume(fixed and size != spec.shape[fixed[0]])
        shape = tuple(size if i == fixed[0] else d for i, d in enumerate(arr.shape))
    bad = np.ones(shape, dtype=arr.dtype)
    with pytest.raises(BadInput) as err:
        validate_inputs({spec.name: bad}, [spec])
    assert f"expected shape {shape_text(spec.shape)}, got {list(shape)}" in str(err.value)


@FAST
@given(case=spec_and_array(), other=st.text("abcxyz_", min_size=1, max_size=8))
def test_a_wrong_input_name_is_refused_naming_both_names(case, other):
    spec, arr = case
    assume(other != spec.name)
    with pytest.raises(BadInput) as err:
        validate_inputs({other: arr}, [spec])
    assert f"(missing [{spec.name!r}]) (unexpected [{other!r}])" in str(err.value)


@FAST
@given(
    arr=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements={"allow_nan": False, "allow_infinity": False},
    ),
    data=st.data(),
)
def test_nan_and_inf_anywhere_are_refused_with_exact_counts(arr, data):
    flat = arr.reshape(-1).copy()
    where = data.draw(st.lists(st.integers(0, flat.size - 1), min_size=1, unique=True))
    bad = data.draw(
        st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), min_size=len(where), max_size=len(where))
    )
    flat[where] = bad
    n_nan = sum(1 for b in bad if np.isnan(b))
    spec = TensorSpec(name="x", shape=arr.shape, dtype="float32")
    with pytest.raises(BadInput, match=f"expected finite values, got {n_nan} NaN and {len(bad) - n_nan} inf"):
        validate_inputs({"x": flat.reshape(arr.shape)}, [spec])


# --- job ids -------------------------------------------------------------------------


@FAST
@given(valid=valid_blobs())
def test_the_worker_hashes_a_decoded_input_to_the_producers_job_id(valid):
    blob, arr = valid
    assert job_id("m", "v", "1", decode_inputs(blob, max_bytes=MAX)) == job_id(
        "m", "v", "1", {"x": arr.copy()}
    )


@FAST
@given(valid=valid_blobs(), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_of_the_input_changes_the_job_id(valid, where, bit):
    _, arr = valid
    raw = bytearray(arr.tobytes())
    raw[int(len(raw) * where)] ^= 1 << bit
    changed = np.frombuffer(bytes(raw), arr.dtype).reshape(arr.shape)
    assert job_id("m", "v", "1", {"x": changed}) != job_id("m", "v", "1", {"x": arr})


@FAST
@given(valid=valid_blobs(), data=st.data())
def test_the_same_bytes_under_another_dtype_or_shape_get_another_job_id(valid, data):
    _, arr = valid
    same_size = [
        d
        for d in ("i1", "u1", "i2", "u2", "f2", "i4", "u4", "f4", "i8", "u8", "f8")
        if np.dtype(d).itemsize == arr.dtype.itemsize and np.dtype(d) != arr.dtype
    ]
    other_dtype = arr.view(data.draw(st.sampled_from(same_size)))
    assert job_id("m", "v", "1", {"x": other_dtype}) != job_id("m", "v", "1", {"x": arr})
    other_shape = arr.reshape(data.draw(st.sampled_from([(arr.size,), (1, arr.size), (arr.size, 1)])))
    assume(other_shape.shape != arr.shape)
    assert job_id("m", "v", "1", {"x": other_shape}) != job_id("m", "v", "1", {"x": arr})


# --- the worker's parsing stages never crash ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=16,
)
envelope_parts = st.fixed_dictionaries(
    {},
    optional={
        "headers": json_values
        | st.fixed_dictionaries(
            {"task": st.just("inferq.predict") | json_values}, optional={"id": json_values}
        ),
        "properties": json_values | st.just({"body_encoding": "base64"}),
        "content-type": st.sampled_from(["application/json", "application/x-msgpack"]) | json_values,
        "body": json_values | st.binary(max_size=32).map(lambda b: base64.b64encode(b).decode()),
    },
)


@FAST
@given(envelope=envelope_parts | json_values)
def test_parse_message_refuses_any_malformed_envelope_with_rejected_only(envelope):
    try:
        items = parse_message(json.dumps(envelope).encode())
    except Rejected:
        return
    assert all(isinstance(jid, str) and jid for jid, _ in items)


SPEC = TensorSpec(name="image", shape=(2, 2), dtype="float32")


class FakeRuntime:
    info = ModelInfo(name="toy", variant="fp32", version="1", runtime="fake", inputs=(SPEC,), outputs=())


job_args = st.fixed_dictionaries(
    {"model": st.just("toy") | json_values, "variant": st.just("fp32") | json_values},
    optional={
        "inputs": json_values | st.binary(max_size=40) | st.just({"image": [[1.0, 2.0], [3.0, 4.0]]}),
        "v": json_values,
        "version": json_values,
        "enqueued_at": json_values,
        "deadline_at": json_values,
    },
)


@FAST
@given(arg=job_args | json_values)
def test_pipeline_prepare_refuses_any_malformed_job_with_an_inferq_error_only(arg):
    pipeline = Pipeline({"toy:fp32": FakeRuntime()}, max_payload_bytes=MAX)  # type: ignore[dict-item]
    try:
        prepared = pipeline.prepare("j1", arg, received_at=0.0)
    except InferqError as exc:
        assert "could not be checked" not in str(exc)  # a named refusal, not the last-resort guard
        return
    assert isinstance(prepared, Prepared) and prepared.inputs["image"].shape == (2, 2)


def test_an_unexpected_error_while_preparing_fails_the_job_uncached_and_logs_no_input(caplog):
    class OddRuntime:  # a spec numpy cannot read: validation itself trips
        info = ModelInfo(
            name="toy",
            variant="fp32",
            version="1",
            runtime="fake",
            inputs=(TensorSpec("image", (1,), "f33"),),
            outputs=(),
        )

    job = {"model": "toy", "variant": "fp32", "inputs": {"image": [1234.5678]}}
    pipeline = Pipeline({"toy:fp32": OddRuntime()}, max_payload_bytes=MAX)  # type: ignore[dict-item]
    with pytest.raises(InferqError, match="input could not be checked: unexpected TypeError") as err:
        pipeline.prepare("j2", job, received_at=0.0)
    assert not err.value.cacheable  # the worker's fault as much as the input's
    assert "job j2: unexpected TypeError while decoding at " in caplog.text
    assert "1234" not in caplog.text
