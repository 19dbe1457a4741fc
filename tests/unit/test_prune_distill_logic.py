"""The pure parts of prune and distill: masks, the schedule, student specs, DATA checks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import BadInput
from workers.models.optimize.pruning_masks import (
    check_sparsity,
    magnitude_mask,
    scheduled_sparsity,
    share_of_zeros,
)
from workers.models.optimize.student import PRESETS, StudentLayer, parse_student
from workers.models.optimize.training_data import Examples, check_examples, load_examples


def test_magnitude_mask_prunes_exactly_the_asked_share_of_the_smallest_weights() -> None:
    w = np.random.default_rng(0).normal(size=(64, 33)).astype(np.float32)
    keep = magnitude_mask(w, 0.5)
    assert (~keep).sum() == round(0.5 * w.size)
    assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


def test_masks_only_grow_when_the_pruned_weights_are_already_zero() -> None:
    w = np.random.default_rng(1).normal(size=(200,)).astype(np.float32)
    first = magnitude_mask(w, 0.3)
    w = np.where(first, w, np.float32(0))
    second = magnitude_mask(w, 0.6)
    assert not np.any(second & ~first)  # nothing pruned earlier comes back
    assert share_of_zeros([np.where(second, w, 0)]) == pytest.approx(0.6)


def test_masks_on_ties_are_exact_and_the_same_each_time() -> None:
    w = np.zeros((10, 10), np.float32)
    assert (~magnitude_mask(w, 0.25)).sum() == 25
    np.testing.assert_array_equal(magnitude_mask(w, 0.25), magnitude_mask(w, 0.25))


def test_schedule_rises_from_zero_to_the_target_and_then_holds() -> None:
    values = [scheduled_sparsity(step, 100, 0.5) for step in range(0, 151, 10)]
    assert values[0] == 0.0
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[10:] == [0.5] * 6
    assert scheduled_sparsity(50, 100, 0.5) == pytest.approx(0.5 * (1 - 0.5**3))  # fast at first


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_sparsity_outside_the_open_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(BadInput, match="strictly between 0 and 1"):
        check_sparsity(bad)


def test_student_spec_and_presets_parse_to_layers() -> None:
    spec = parse_student("conv:8, pool:2,dense:32")
    assert spec.layers == (StudentLayer("conv", 8), StudentLayer("pool", 2), StudentLayer("dense", 32))
    for name, text in PRESETS.items():
        assert parse_student(name).layers == parse_student(text).layers


@pytest.mark.parametrize(
    "bad", ["", "conv", "conv:", "conv:0", "conv:x", "lstm:8", "dense:99999", "conv:8,,dense:3", "huge"]
)
def test_a_student_spec_that_does_not_parse_is_refused_with_the_form(bad: str) -> None:
    with pytest.raises(BadInput, match=r"does not parse.*conv:FILTERS, pool:SIZE and dense:UNITS"):
        parse_student(bad)


def test_data_of_the_wrong_shape_is_refused_with_both_shapes() -> None:
    data = Examples(x=np.zeros((5, 8, 8), np.float32), y=None, source="x.npy")
    with pytest.raises(BadInput, match=r"\(5, 8, 8\).*\(N, 28, 28, 1\).*wrong shape"):
        check_examples(data, (28, 28, 1), 10, what="--data")
    one = Examples(x=np.zeros((28, 28, 1), np.float32), y=None, source="one.npy")  # no batch axis
    with pytest.raises(BadInput, match="wrong shape"):
        check_examples(one, (28, 28, 1), 10, what="--data")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(4, np.int64), "5 inputs but labels of shape"),
        (np.full(5, 10), "labels run from 10 to 10, the model has 10 classes"),
        (np.zeros(5, np.float32), "expected integer class ids"),
    ],
)
def test_labels_that_do_not_fit_the_inputs_or_the_classes_are_refused(
    labels: np.ndarray, message: str
) -> None:
    data = Examples(x=np.zeros((5, 3), np.float32), y=labels, source="d.npz")
    with pytest.raises(BadInput, match=message):
        check_examples(data, (3,), 10, what="--data")


def test_data_files_read_as_npz_with_labels_or_npy_with_a_labels_file(tmp_path: Path) -> None:
    x, y = np.ones((4, 3), np.float32), np.arange(4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    both = load_examples(tmp_path / "d.npz")
    split = load_examples(tmp_path / "x.npy", tmp_path / "y.npy")
    assert both.y is not None and split.y is not None
    np.testing.assert_array_equal(both.y, split.y)
    np.savez(tmp_path / "other.npz", inputs=x)
    with pytest.raises(BadInput, match=r"has arrays \['inputs'\]; expected x"):
        load_examples(tmp_path / "other.npz")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(BadInput, match="cannot be read as numpy data"):
        load_examples(tmp_path / "broken.npy")
