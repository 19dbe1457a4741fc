"""The pure parts of ``inferq models convert`` / ``compare``: calibration files, modes,
error wording, agreement figures, the table and the plot (no TensorFlow, no worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.errors import BadInput
from tasks.schema import TensorSpec
from workers.models.optimize.calibration import calibration_samples, read_arrays
from workers.models.optimize.compare import (
    Comparison,
    VariantFigures,
    accuracy,
    agreement,
    default_batch_sizes,
    is_classifier,
)
from workers.models.optimize.convert import converter_error
from workers.models.optimize.errors import CalibrationRequired, ConversionFailed, UnsupportedOps
from workers.models.optimize.modes import NEEDS_CALIBRATION, Mode, parse_mode, require_calibration
from workers.models.optimize.report import table

IMAGE = TensorSpec(name="image", shape=(28, 28, 1), dtype="float32", tensor_dtype="float32")


def test_npy_calibration_becomes_one_sample_per_row_cast_to_the_input_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((5, 28, 28, 1), np.float64))
    samples = calibration_samples(tmp_path / "x.npy", [IMAGE], limit=3)
    assert len(samples) == 3
    assert samples[0]["image"].shape == (1, 28, 28, 1) and samples[0]["image"].dtype == np.float32


def test_npz_is_read_by_input_name_and_a_single_array_whatever_its_key(tmp_path: Path) -> None:
    a = TensorSpec(name="a", shape=(4,), dtype="float32")
    b = TensorSpec(name="b", shape=(2,), dtype="float32")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 4)), b=np.zeros((3, 2)))
    got = read_arrays(tmp_path / "two.npz", [a, b])
    assert got["a"].shape == (3, 4) and got["b"].shape == (3, 2)
    np.savez(tmp_path / "one.npz", whatever=np.zeros((7, 4)))
    assert read_arrays(tmp_path / "one.npz", [a])["a"].shape == (7, 4)
    with pytest.raises(BadInput, match=r"lacks arrays for inputs \['b'\]"):
        np.savez(tmp_path / "half.npz", a=np.zeros((3, 4)), c=np.zeros((3, 2)))
        read_arrays(tmp_path / "half.npz", [a, b])


def test_a_folder_of_images_is_resized_to_the_input_and_scaled_to_the_range(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40, 30), (255, 255, 255) if i else (0, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    x = read_arrays(tmp_path, [IMAGE], image_range=(-1.0, 1.0))["image"]
    assert x.shape == (3, 28, 28, 1)
    assert x[0].max() == pytest.approx(-1.0) and x[1].min() == pytest.approx(1.0)


def test_calibration_of_the_wrong_shape_names_both_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((5, 8, 8), np.float32))
    with pytest.raises(
        BadInput, match=r"expects samples of shape image\[28,28,1\]:float32, got .*\[5, 8, 8\]"
    ):
        read_arrays(tmp_path / "x.npy", [IMAGE])


def test_a_file_that_is_not_numpy_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"garbage")
    with pytest.raises(BadInput, match=r"x.npy: not a plain numeric .npy file"):
        read_arrays(tmp_path / "x.npy", [IMAGE])
    with pytest.raises(BadInput, match=r"expected .npy, .npz or a folder of images"):
        read_arrays(Path(__file__), [IMAGE])


def test_modes_that_quantize_activations_need_calibration_and_the_error_lists_them() -> None:
    assert {Mode.INT8, Mode.INT16X8} == NEEDS_CALIBRATION
    with pytest.raises(CalibrationRequired) as exc:
        require_calibration(Mode.INT8, have_calibration=False)
    message = str(exc.value)
    assert "--to int8 needs calibration data" in message and "--calibration" in message
    assert "modes that need it: int16x8, int8" in message and "dynamic-int8" in message
    require_calibration(Mode.DYNAMIC_INT8, have_calibration=False)
    with pytest.raises(BadInput, match="--to takes one of fp32, fp16, int8"):
        parse_mode("int4")


def test_converter_failures_name_the_unsupported_ops() -> None:
    text = (
        "ConverterError: Some ops are not supported by the native TFLite runtime, you can enable "
        "TF kernels fallback using TF Select.\nFlex ops: tf.Svd\nDetails:\n\ttf.Svd(tensor<?x4x4xf32>)"
    )
    err = converter_error(text, label="svd-model", mode=Mode.FP32)
    assert isinstance(err, UnsupportedOps) and "no builtin kernel for: Svd" in str(err)
    plain = converter_error("something else broke\nmore", label="m", mode=Mode.INT8)
    assert isinstance(plain, ConversionFailed) and str(plain).endswith("something else broke")


def test_agreement_counts_top1_for_class_scores_and_errors_for_every_output() -> None:
    ref = {"probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), "box": np.zeros((3, 4))}
    got = {"probs": np.array([[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]]), "box": np.full((3, 4), 0.5)}
    by_name = {a.output: a for a in agreement(ref, got)}
    assert by_name["probs"].top1 == pytest.approx(2 / 3)
    assert by_name["probs"].max_abs == pytest.approx(0.5)
    assert by_name["box"].top1 is None  # boxes are not class scores: errors only
    assert by_name["box"].mean_abs == pytest.approx(0.5)
    assert accuracy(got, np.array([0, 1, 0])) == pytest.approx(2 / 3)
    assert accuracy({"y": np.zeros((3, 1))}, np.array([0, 0, 0])) is None


def test_top1_agreement_leaves_out_inputs_whose_reference_scores_tie() -> None:
    uniform = np.full((4, 10), 0.1)
    (a,) = agreement({"p": uniform}, {"p": np.eye(10)[[3, 4, 5, 6]]})
    assert a.top1 is None and a.top1_inputs == 0  # not "100%": argmax of a tie means nothing
    ref = np.array([[0.5, 0.5, 0.0], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    (b,) = agreement({"p": ref}, {"p": np.array([[0.0, 1.0, 0.0], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4]])})
    assert b.top1_inputs == 2 and b.top1 == pytest.approx(0.5)


def test_logits_count_as_class_scores_only_when_the_model_labels_them() -> None:
    logits = np.array([[3.0, -1.0], [-2.0, 5.0]])
    assert not is_classifier(logits)
    assert is_classifier(logits, n_labels=2)


def test_batch_sizes_double_up_to_the_largest_asked() -> None:
    assert default_batch_sizes(1) == [1]
    assert default_batch_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_batch_sizes(12) == [1, 2, 4, 8, 12]


def _figures(variant: str, size: int, p50: float, top1: float) -> VariantFigures:
    from workers.models.optimize.compare import Agreement

    stats = {"batch": 1, "calls": 10, "mean_ms": p50, "p50_ms": p50, "p99_ms": 2 * p50}
    best = {**stats, "batch": 16, "inputs_per_s": 1000.0 / p50 * 4}
    return VariantFigures(
        variant=variant,
        runtime="litert",
        version="abc",
        file_bytes=size,
        import_ms=1.0,
        load_ms=2.0,
        first_run_ms=3.0,
        batch1={**stats, "inputs_per_s": 1000.0 / p50},
        best=best,
        batches=[stats, best],
        rss_before_load_bytes=50 * 2**20,
        peak_rss_bytes=60 * 2**20,
        agreement=[Agreement("probs", top1, 0.01, 0.001)],
        accuracy=0.95,
    )


def _comparison() -> Comparison:
    return Comparison(
        model="digits",
        reference="fp32",
        machine="Test CPU, 2 cores",
        threads=1,
        samples=360,
        data="heldout_x.npy",
        variants=[_figures("fp32", 100_000, 0.2, 1.0), _figures("int8", 27_000, 0.25, 0.99)],
    )


def test_the_table_shows_size_against_the_reference_and_agreement_per_variant() -> None:
    text = table(_comparison())
    lines = text.splitlines()
    assert lines[0].startswith("digits on Test CPU, 2 cores; 1 thread(s); 360 inputs")
    assert "top-1 agr" in lines[2] and "RSS MiB" in lines[2]
    int8 = next(line for line in lines if line.startswith("int8"))
    assert " 27% " in int8 and "99.0%" in int8 and "95.0%" in int8


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from workers.models.optimize.plot import plot

    out = plot(_comparison(), tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
