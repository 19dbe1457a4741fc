"""What ``--to`` can ask for, and which modes need calibration data.

A mode names what the produced model stores and computes in, whichever tool makes it:
TensorFlow's converter from a SavedModel or Keras model, the LiteRT quantizer from a
``.tflite`` file alone.
"""

from __future__ import annotations

from enum import StrEnum

from workers.models.optimize.errors import CalibrationRequired


class Mode(StrEnum):
    """A target precision for ``inferq models convert --to``."""

    #: Plain float TFLite (from a SavedModel or Keras model only): the reference variant.
    FP32 = "fp32"
    #: Weights stored as float16, computed in float32: half the size, same accuracy.
    FP16 = "fp16"
    #: Weights and activations int8, calibrated; int8 inputs/outputs from the converter.
    INT8 = "int8"
    #: Weights int8, activations quantized on the fly per call: no calibration needed.
    DYNAMIC_INT8 = "dynamic-int8"
    #: Activations int16, weights int8, calibrated: closer to float than int8, slower.
    INT16X8 = "int16x8"
    #: Weights int8, dequantized before a float computation: smallest accuracy loss.
    WEIGHT_ONLY = "weight-only"


#: Modes that quantize activations, whose ranges come from running sample inputs.
NEEDS_CALIBRATION = frozenset({Mode.INT8, Mode.INT16X8})


def parse_mode(text: str) -> Mode:
    """The mode named by ``text``; ``BadInput`` listing the modes otherwise."""
    try:
        return Mode(text)
    except ValueError:
        from tasks.errors import BadInput

        raise BadInput(f"--to takes one of {', '.join(m.value for m in Mode)}; got {text!r}") from None


def require_calibration(mode: Mode, have_calibration: bool) -> None:
    """Refuse a mode that needs calibration data when none was given, before any work."""
    if mode in NEEDS_CALIBRATION and not have_calibration:
        needing = ", ".join(sorted(m.value for m in NEEDS_CALIBRATION))
        free = ", ".join(m.value for m in Mode if m not in NEEDS_CALIBRATION)
        raise CalibrationRequired(
            f"--to {mode.value} needs calibration data: --calibration FILE.npy, FILE.npz or a folder "
            f"of images, a few hundred typical inputs (modes that need it: {needing}; without it: {free})"
        )
