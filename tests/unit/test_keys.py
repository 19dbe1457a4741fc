"""tasks/keys.py: content-hash job ids, name checks, queue and Redis key names."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tasks import constants as C
from tasks.codec import quote
from tasks.errors import BadInput
from tasks.keys import check_name, inflight_key, job_id, queue_name, random_job_id, result_key

X = np.arange(12, dtype=np.float32).reshape(3, 4)
M = np.array([1, 0, 1], dtype=np.int8)


def jid(model="mnist", variant="fp32", version="1", inputs=None) -> str:
    return job_id(model, variant, version, {"x": X} if inputs is None else inputs)


def test_job_id_is_deterministic_and_a_32_char_hex_digest():
    a = jid()
    assert a == jid()
    assert a == job_id("mnist", "fp32", "1", {"x": X.copy()})
    assert re.fullmatch(r"[0-9a-f]{32}", a)


def test_job_id_is_independent_of_dict_order():
    assert job_id("m", "v", "1", {"x": X, "mask": M}) == job_id("m", "v", "1", {"mask": M, "x": X})


def test_job_id_is_the_same_for_c_and_fortran_order_of_the_same_array():
    f = np.asfortranarray(X)
    assert not f.flags.c_contiguous
    assert jid(inputs={"x": f}) == jid(inputs={"x": X})


def test_job_id_is_the_same_for_a_strided_view_and_its_copy():
    big = np.arange(48, dtype=np.float32).reshape(6, 8)
    view = big[::2, 1::2]
    assert jid(inputs={"x": view}) == jid(inputs={"x": view.copy()})


@settings(max_examples=50, deadline=None)
@given(arr=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, max_side=5)))
def test_job_id_depends_on_logical_content_not_layout(arr):
    assert jid(inputs={"x": np.asfortranarray(arr)}) == jid(inputs={"x": np.ascontiguousarray(arr)})


@pytest.mark.parametrize(
    "changed",
    [
        {"model": "mnist2"},
        {"variant": "int8"},
        {"version": "2"},
        {"inputs": {"y": X}},
    ],
)
def test_job_id_changes_with_model_variant_version_and_input_name(changed):
    assert jid(**changed) != jid()


def test_job_id_changes_with_any_single_byte_of_the_input():
    base = jid()
    raw = bytearray(X.tobytes())
    seen = {base}
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        arr = np.frombuffer(bytes(flipped), dtype=np.float32).reshape(X.shape)
        seen.add(jid(inputs={"x": arr}))
    assert len(seen) == len(raw) + 1


def test_job_id_changes_with_dtype_for_the_same_bytes():
    as_int = X.view(np.int32)
    assert as_int.tobytes() == X.tobytes()
    assert jid(inputs={"x": as_int}) != jid()


def test_job_id_changes_with_shape_for_the_same_bytes():
    assert jid(inputs={"x": X.reshape(4, 3)}) != jid()
    assert jid(inputs={"x": X.reshape(12)}) != jid()


def test_job_id_differs_for_a_scalar_and_a_one_element_vector():
    scalar = np.array(1.0, dtype=np.float32)
    assert jid(inputs={"x": scalar}) != jid(inputs={"x": scalar.reshape(1)})


def test_job_id_does_not_confuse_field_boundaries():
    # ("ab", "c") must not hash like ("a", "bc"): fields are separated, not concatenated.
    assert job_id("ab", "c", "1", {"x": X}) != job_id("a", "bc", "1", {"x": X})
    assert job_id("m", "v", "12", {"x": X}) != job_id("m", "v1", "2", {"x": X})


def test_random_job_ids_are_marked_and_unique():
    ids = {random_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("nc-") and len(i) == 35 for i in ids)
    assert not any(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_queue_and_key_names():
    assert queue_name("mnist", "int8") == f"{C.QUEUE_PREFIX}.mnist.int8" == "inferq.mnist.int8"
    assert result_key("abc") == "celery-task-meta-abc"
    assert inflight_key("abc") == "inferq:inflight:abc"


@pytest.mark.parametrize("name", ["mnist", "fp32", "a", "Model_2-b", "9lives", "x" * 64])
def test_check_name_returns_valid_names(name):
    assert check_name("model", name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "a\\b",
        "",
        "a.b",
        ".hidden",
        "..",
        "x" * 65,
        "-leading",
        "_leading",
        "a b",
        "naïve",
        "a:b",
    ],
)
def test_check_name_refuses_unsafe_names(name):
    # Shown quoted, and shortened when long: names are sender-chosen and end up in logs.
    with pytest.raises(BadInput, match=rf"variant name must match .* got {re.escape(quote(name))}"):
        check_name("variant", name)


@pytest.mark.parametrize("name", [None, 3, b"mnist", ["mnist"]])
def test_check_name_refuses_non_strings(name):
    with pytest.raises(BadInput, match="model name must match"):
        check_name("model", name)


def test_check_name_refuses_a_trailing_newline():
    with pytest.raises(BadInput):
        check_name("model", "mnist\n")


@given(st.text(max_size=70))
def test_every_name_check_name_accepts_is_safe_for_paths_and_queues(name):
    try:
        check_name("model", name)
    except BadInput:
        return
    stripped = name.rstrip("\n")  # see test_check_name_refuses_a_trailing_newline
    assert stripped
    assert not {"/", "\\", ".", "\0", " ", ":"} & set(stripped)
    assert len(stripped) <= 64
