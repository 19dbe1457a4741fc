"""A converted model becomes a variant of the same model in the models folder.

Registered through ``Registry.write`` like any model, with one difference: the
version is a hash of the variant's name *and* the file's sha256, not the file's hash
alone. Converters are deterministic, so two variants can be byte for byte the same (an
fp32 re-converted from the SavedModel the example's fp32 came from; weight-only made
from the same fp32 by two routes); their versions still differ, as do their cache keys
(which carry model, variant and version), and a re-conversion that changes the file
changes the version, so results cached for the old file are never served for the new. Labels and batching
settings are carried over from the variant it was made from; ``meta.json`` also
records how it was made (``converted``).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from tasks.errors import BadInput
from tasks.keys import check_name
from tasks.schema import ModelInfo
from workers.models.registry import META_FILE, ModelEntry, Registry, resolve_inside


def check_new_variant(registry: Registry, name: str, variant: str, *, force: bool) -> None:
    """Refuse a name that is malformed, or taken (without ``force``), before any work is done."""
    check_name("model", name)
    check_name("variant", variant)
    resolve_inside(registry.root, f"{name}/{variant}")
    if (registry.root / name / variant / META_FILE).is_file() and not force:
        raise BadInput(
            f"{name}:{variant} already exists in {registry.root.resolve()}; "
            "pass --variant to add another variant (or --force to replace it)"
        )


def variant_version(variant: str, blob: bytes) -> str:
    """12 hex digits that change with the file and differ between variants of one file."""
    file_hash = hashlib.sha256(blob).hexdigest()
    return hashlib.sha256(f"{variant}\0{file_hash}".encode()).hexdigest()[:12]


def register_variant(
    registry: Registry,
    blob: bytes,
    *,
    name: str,
    variant: str,
    base: ModelInfo | None,
    provenance: dict[str, Any],
) -> ModelEntry:
    """Write ``blob`` (a ``.tflite`` model) as ``name:variant``; its tensors read from the file."""
    from workers.models.runtimes.litert import describe_tflite

    with tempfile.TemporaryDirectory(prefix="inferq-variant-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(blob)
        ins, outs = describe_tflite(path)
        kept: dict[str, Any] = (
            {"labels": base.labels, "max_batch_size": base.max_batch_size, "max_wait_ms": base.max_wait_ms}
            if base is not None
            else {}
        )
        info = ModelInfo(
            name=name,
            variant=variant,
            version=variant_version(variant, blob),
            runtime="litert",
            inputs=ins,
            outputs=outs,
            **kept,
        )
        return registry.write(info, path, move=True, extra={"converted": provenance})
