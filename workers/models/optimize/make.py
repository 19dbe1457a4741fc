"""``inferq models convert``: make a cheaper variant of a model and register it.

Picks the tool by the source: TensorFlow's converter for a SavedModel or Keras model
(``convert``), the LiteRT quantizer for a ``.tflite`` file alone (``quantize_tflite``);
weight-only from a SavedModel goes through both (fp32 TFLite, then the quantizer).
Everything that can be refused without TensorFlow is refused first: an unknown mode,
missing calibration, a taken variant name, a source of the wrong kind.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.errors import BadInput
from tasks.schema import TensorSpec
from workers.models.optimize.calibration import DEFAULT_CALIBRATION_SAMPLES, calibration_samples
from workers.models.optimize.modes import NEEDS_CALIBRATION, Mode, require_calibration
from workers.models.optimize.register import check_new_variant, register_variant
from workers.models.optimize.source import Source, SourceKind, resolve_source
from workers.models.registry import ModelEntry, Registry, size_of

TOOL_TF = "tflite-converter"
TOOL_QUANTIZER = "litert-quantizer"


@dataclass(frozen=True)
class Converted:
    """What ``convert_model`` made."""

    entry: ModelEntry
    source: Source
    mode: Mode
    tool: str
    calibration_samples: int
    source_bytes: int
    seconds: float


def convert_model(
    registry: Registry,
    source_spec: str,
    mode: Mode,
    *,
    calibration: Path | None = None,
    calibration_limit: int = DEFAULT_CALIBRATION_SAMPLES,
    image_range: tuple[float, float] = (0.0, 1.0),
    name: str | None = None,
    variant: str | None = None,
    force: bool = False,
) -> Converted:
    """Convert ``source_spec`` (a path, or ``MODEL:VARIANT``) to ``mode``; register the result.

    The new variant is ``name:variant``: the model name defaults to the source's (when
    it is a registered variant), the variant name to the mode's (``int8``, ...).
    """
    require_calibration(mode, calibration is not None)
    source = resolve_source(source_spec, registry)
    name = name or (source.base.name if source.base is not None else None)
    if name is None:
        raise BadInput(f"{source.path} is not in the models folder: give the model's name with --name")
    variant = variant or mode.value
    if source.base is not None and (name, variant) == (source.base.name, source.base.variant):
        raise BadInput(f"{name}:{variant} is the source itself; give the new variant another name")
    check_new_variant(registry, name, variant, force=force)
    if calibration is not None and not calibration.exists():
        raise BadInput(f"calibration data {calibration} does not exist")
    calibrate = calibration if mode in NEEDS_CALIBRATION else None
    started = time.monotonic()

    def samples_for(inputs: tuple[TensorSpec, ...]) -> list[dict[str, np.ndarray]] | None:
        if calibrate is None:
            return None
        return calibration_samples(calibrate, inputs, limit=calibration_limit, image_range=image_range)

    if source.kind is SourceKind.TFLITE:
        from workers.models.optimize.quantize_tflite import check_tflite, quantize_tflite

        samples = samples_for(check_tflite(source.path))
        blob = quantize_tflite(source.path, mode, samples)
        tool = TOOL_QUANTIZER
    else:
        from workers.models.optimize.convert import savedmodel_inputs, savedmodel_of, tflite_from_savedmodel

        with savedmodel_of(source) as saved:
            samples = samples_for(savedmodel_inputs(saved))
            if mode is Mode.WEIGHT_ONLY:
                blob = _weight_only_via_fp32(saved, source)
                tool = f"{TOOL_TF} + {TOOL_QUANTIZER}"
            else:
                blob = tflite_from_savedmodel(saved, mode, samples, label=source.label)
                tool = TOOL_TF
    provenance = {
        "from": source.label,
        "mode": mode.value,
        "tool": tool,
        "calibration": str(calibrate) if calibrate is not None else None,
        "calibration_samples": len(samples or ()),
    }
    entry = register_variant(
        registry, blob, name=name, variant=variant, base=source.base, provenance=provenance
    )
    return Converted(
        entry=entry,
        source=source,
        mode=mode,
        tool=tool,
        calibration_samples=len(samples or ()),
        source_bytes=size_of(source.path),
        seconds=time.monotonic() - started,
    )


def _weight_only_via_fp32(saved: Path, source: Source) -> bytes:
    from workers.models.optimize.convert import tflite_from_savedmodel
    from workers.models.optimize.quantize_tflite import quantize_tflite

    with tempfile.TemporaryDirectory(prefix="inferq-fp32-") as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        fp32.write_bytes(tflite_from_savedmodel(saved, Mode.FP32, None, label=source.label))
        return quantize_tflite(fp32, Mode.WEIGHT_ONLY)
