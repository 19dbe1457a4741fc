"""tasks/validation.py: inputs are checked against a model's specs, naming expected vs got."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import BadInput
from tasks.schema import TensorSpec
from tasks.validation import cast_inputs, validate_inputs

IMAGE = TensorSpec(name="image", shape=(28, 28, 1), dtype="float32")
MASK = TensorSpec(name="mask", shape=(4,), dtype="int32")


def image(**kw) -> np.ndarray:
    return np.zeros((28, 28, 1), dtype=kw.get("dtype", np.float32))


def test_valid_inputs_come_back_unchanged_in_spec_order():
    x, m = image(), np.arange(4, dtype=np.int32)
    out = validate_inputs({"mask": m, "image": x}, [IMAGE, MASK])
    assert list(out) == ["image", "mask"]
    assert out["image"] is x
    assert out["mask"] is m


def test_wrong_dtype_names_expected_float32_and_got_float64_with_a_cast_hint():
    with pytest.raises(
        BadInput,
        match=r"input 'image': expected dtype float32, got float64 \(cast with x\.astype\(np\.float32\)\)",
    ):
        validate_inputs({"image": image(dtype=np.float64)}, [IMAGE])


def test_wrong_dtype_bool_gets_no_cast_hint():
    with pytest.raises(BadInput, match=r"expected dtype float32, got bool$"):
        validate_inputs({"image": image(dtype=np.bool_)}, [IMAGE])


def test_int_input_for_float_model_is_refused_not_silently_cast():
    with pytest.raises(BadInput, match="expected dtype float32, got int32"):
        validate_inputs({"image": image(dtype=np.int32)}, [IMAGE])


def test_wrong_shape_names_expected_and_got():
    with pytest.raises(BadInput, match=r"input 'image': expected shape \[28, 28, 1\], got \[28, 28\]$"):
        validate_inputs({"image": np.zeros((28, 28), dtype=np.float32)}, [IMAGE])


def test_wrong_dimension_size_is_refused():
    with pytest.raises(BadInput, match=r"expected shape \[28, 28, 1\], got \[28, 27, 1\]"):
        validate_inputs({"image": np.zeros((28, 27, 1), dtype=np.float32)}, [IMAGE])


def test_extra_leading_batch_axis_gets_a_hint():
    with pytest.raises(
        BadInput,
        match=r"expected shape \[28, 28, 1\], got \[1, 28, 28, 1\] \(send one input without the batch axis\)",
    ):
        validate_inputs({"image": np.zeros((1, 28, 28, 1), dtype=np.float32)}, [IMAGE])


def test_batch_of_several_gets_no_batch_axis_hint():
    with pytest.raises(BadInput, match=r"got \[2, 28, 28, 1\]$"):
        validate_inputs({"image": np.zeros((2, 28, 28, 1), dtype=np.float32)}, [IMAGE])


@pytest.mark.parametrize(
    ("values", "n_nan", "n_inf"),
    [
        ([np.nan, 0.0, 0.0, 0.0], 1, 0),
        ([np.inf, -np.inf, 0.0, 0.0], 0, 2),
        ([np.nan, np.nan, np.inf, 1.0], 2, 1),
    ],
)
def test_nan_and_inf_are_refused_with_counts(values, n_nan, n_inf):
    spec = TensorSpec(name="v", shape=(4,), dtype="float32")
    with pytest.raises(
        BadInput, match=rf"input 'v': expected finite values, got {n_nan} NaN and {n_inf} inf"
    ):
        validate_inputs({"v": np.array(values, dtype=np.float32)}, [spec])


def test_large_finite_values_are_accepted():
    spec = TensorSpec(name="v", shape=(2,), dtype="float32")
    arr = np.array([np.finfo(np.float32).max, np.finfo(np.float32).min], dtype=np.float32)
    assert validate_inputs({"v": arr}, [spec])["v"] is arr


def test_empty_array_is_refused():
    spec = TensorSpec(name="v", shape=(None,), dtype="float32")
    with pytest.raises(BadInput, match=r"input 'v': expected shape \[\?\], got an empty array \(0,\)"):
        validate_inputs({"v": np.zeros((0,), dtype=np.float32)}, [spec])


def test_missing_input_is_named():
    with pytest.raises(
        BadInput, match=r"expected inputs \['image', 'mask'\], got \['image'\] \(missing \['mask'\]\)$"
    ):
        validate_inputs({"image": image()}, [IMAGE, MASK])


def test_unexpected_input_is_named():
    with pytest.raises(
        BadInput, match=r"expected inputs \['image'\], got \['extra', 'image'\] \(unexpected \['extra'\]\)$"
    ):
        validate_inputs({"image": image(), "extra": image()}, [IMAGE])


def test_missing_and_unexpected_inputs_are_both_named():
    with pytest.raises(BadInput, match=r"\(missing \['image'\]\) \(unexpected \['img'\]\)"):
        validate_inputs({"img": image()}, [IMAGE])


def test_dynamic_dims_accept_any_size():
    spec = TensorSpec(name="seq", shape=(None, 3), dtype="float32")
    for n in (1, 5, 17):
        arr = np.ones((n, 3), dtype=np.float32)
        assert validate_inputs({"seq": arr}, [spec])["seq"] is arr


def test_dynamic_dims_still_check_the_fixed_dims_and_rank():
    spec = TensorSpec(name="seq", shape=(None, 3), dtype="float32")
    with pytest.raises(BadInput, match=r"expected shape \[\?, 3\], got \[5, 4\]"):
        validate_inputs({"seq": np.ones((5, 4), dtype=np.float32)}, [spec])
    with pytest.raises(BadInput, match=r"expected shape \[\?, 3\], got \[5\]"):
        validate_inputs({"seq": np.ones((5,), dtype=np.float32)}, [spec])


def test_scalar_spec_accepts_a_zero_dimensional_array():
    spec = TensorSpec(name="t", shape=(), dtype="float32")
    arr = np.array(0.5, dtype=np.float32)
    assert validate_inputs({"t": arr}, [spec])["t"] is arr


def test_int_inputs_skip_the_finiteness_check():
    arr = np.array([np.iinfo(np.int32).max, 0, -1, 7], dtype=np.int32)
    assert validate_inputs({"mask": arr}, [MASK])["mask"] is arr


def test_many_and_long_unexpected_names_are_listed_briefly():
    inputs = {"image": image(), **{f"extra{i:03d}" + "z" * 100: image() for i in range(500)}}
    with pytest.raises(BadInput, match=r"\(unexpected \['extra000zzz.*\.\.\. 492 more\]") as err:
        validate_inputs(inputs, [IMAGE])
    assert len(str(err.value)) < 2000


# --- cast_inputs: safe casts to the model's dtype ------------------------------------

F32 = (TensorSpec(name="x", shape=(3,), dtype="float32"),)
I8 = (TensorSpec(name="x", shape=(3,), dtype="int8"),)


@pytest.mark.parametrize(
    "given",
    [
        np.array([0.5, -2.0, 1e30]),  # float64 within float32's range
        np.array([1, 2, 3], dtype=np.int64),
        np.array([1, 2, 3], dtype=np.uint8),
        np.array([0.5, 1.5, 2.5], dtype=np.float16),
    ],
)
def test_safe_casts_to_float32_keep_every_value(given):
    out = cast_inputs({"x": given}, F32)["x"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, given.astype(np.float64), rtol=1e-6)
    validate_inputs({"x": out}, F32)


def test_float64_beyond_float32_range_is_refused_naming_the_dtype():
    with pytest.raises(BadInput, match=r"input 'x': expected dtype float32, got float64 with values outside"):
        cast_inputs({"x": np.array([1.0, 1e39, 0.0])}, F32)


def test_nan_is_carried_over_for_validation_to_refuse_by_name():
    out = cast_inputs({"x": np.array([np.nan, 1.0, np.inf])}, F32)
    assert out["x"].dtype == np.float32
    with pytest.raises(BadInput, match="expected finite values, got 1 NaN and 1 inf"):
        validate_inputs(out, F32)


def test_whole_numbers_cast_to_an_int_input_within_its_range():
    out = cast_inputs({"x": np.array([-128.0, 0.0, 127.0])}, I8)["x"]
    assert out.dtype == np.int8 and out.tolist() == [-128, 0, 127]


@pytest.mark.parametrize(
    ("given", "match"),
    [
        (np.array([0.5, 1.0, 2.0]), "that are not whole numbers"),
        (np.array([np.nan, 1.0, 2.0]), "that are not whole numbers"),
        (np.array([1.0, 200.0, 2.0]), r"outside int8's range \[-128, 127\]"),
        (np.array([1, -129, 2]), r"outside int8's range"),
    ],
)
def test_lossy_casts_to_int8_are_refused(given, match):
    with pytest.raises(
        BadInput, match=rf"input 'x': expected dtype int8, got {given.dtype.name} with values {match}"
    ):
        cast_inputs({"x": given}, I8)


@pytest.mark.parametrize(
    "given", [np.array([True, False, True]), np.array([1 + 2j, 0, 0]), np.array(["a", "b", "c"])]
)
def test_non_numeric_casts_are_left_for_validation_to_refuse(given):
    out = cast_inputs({"x": given}, F32)
    assert out["x"] is given
    with pytest.raises(BadInput, match="expected dtype float32"):
        validate_inputs(out, F32)


def test_inputs_the_model_does_not_take_are_left_alone():
    extra = np.array([1.0])
    assert cast_inputs({"y": extra}, F32) == {"y": extra}


def test_a_float_at_int64s_edge_is_refused_not_wrapped():
    with pytest.raises(BadInput, match=r"outside int64's range"):
        cast_inputs({"x": np.array([2.0**63, 0.0, 1.0])}, (TensorSpec(name="x", shape=(3,), dtype="int64"),))


def test_ints_beyond_a_small_floats_range_are_refused_naming_it():
    with pytest.raises(
        BadInput, match=r"expected dtype float16, got int64 with values outside float16's range"
    ):
        cast_inputs({"x": np.array([70000, 0, 1])}, (TensorSpec(name="x", shape=(3,), dtype="float16"),))
