"""What ``convert`` starts from: a SavedModel, a Keras file, or a ``.tflite`` file.

The source is named by a path, or as ``MODEL:VARIANT`` of the models folder; the
latter also gives the new variant its model name, labels and batching settings.
Only the file's kind is read here (no TensorFlow), so a wrong source or a missing
calibration is refused before seconds go into importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tasks.errors import ModelNotFound
from tasks.schema import ModelInfo
from workers.models.optimize.errors import UnreadableModel
from workers.models.registry import Registry

KERAS_SUFFIXES = (".keras", ".h5")


class SourceKind(StrEnum):
    SAVEDMODEL = "savedmodel"
    KERAS = "keras"
    TFLITE = "tflite"


@dataclass(frozen=True)
class Source:
    """A model to convert: where it is, what kind, and the registered variant it is (if one)."""

    kind: SourceKind
    path: Path
    #: The registry entry's info when the source was named ``MODEL:VARIANT``.
    base: ModelInfo | None = None

    @property
    def label(self) -> str:
        return self.base.key if self.base is not None else str(self.path)


def kind_of(path: Path) -> SourceKind:
    """The source kind of ``path``; ``UnreadableModel`` naming the accepted kinds otherwise."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SourceKind.SAVEDMODEL
        raise UnreadableModel(f"{path} is a folder but not a SavedModel (no saved_model.pb in it)")
    if path.suffix == ".tflite":
        return SourceKind.TFLITE
    if path.suffix in KERAS_SUFFIXES:
        return SourceKind.KERAS
    raise UnreadableModel(
        f"{path}: expected a SavedModel folder, a Keras file (.keras, .h5) or a .tflite file"
    )


def resolve_source(spec: str, registry: Registry) -> Source:
    """``spec`` as an existing path, else as ``MODEL:VARIANT`` in the models folder."""
    path = Path(spec)
    if path.exists():
        return Source(kind_of(path), path)
    name, sep, variant = spec.partition(":")
    if not sep:
        raise UnreadableModel(
            f"{spec} does not exist; give a model file or folder, or MODEL:VARIANT of the models folder"
        )
    try:
        entry = registry.get(name, variant)
    except ModelNotFound as exc:
        raise UnreadableModel(f"{spec} is neither a file nor a model variant: {exc}") from None
    return Source(kind_of(entry.path), entry.path, base=entry.info)
