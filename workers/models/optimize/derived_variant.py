"""Which model a pruned or distilled variant joins, and whose serving settings it takes.

It joins its source's model (``submit("digits", x, variant="pruned50")``); registering
goes through ``register`` like a converted variant, so its version is its file's hash
and the cache never hands one variant's answer to another. Labels and batch limits
come from a variant already there (fp32 first), so the new one batches and labels its
outputs like its siblings.
"""

from __future__ import annotations

from tasks.errors import BadInput
from tasks.keys import check_name
from tasks.schema import ModelInfo
from workers.models.registry import Registry


def target_name(source_name: str | None, name: str | None, src: str) -> str:
    """The model the variant joins: ``--name``, else the one SRC lies under."""
    if name:
        return check_name("model", name)
    if source_name:
        return source_name
    raise BadInput(f"{src} lies outside the models folder: give --name, the model the variant should join")


def sibling_info(registry: Registry, name: str) -> ModelInfo | None:
    """A variant of ``name`` already in the folder (fp32 first), or None."""
    infos = sorted(
        (e.info for e in registry.entries() if e.info.name == name), key=lambda i: i.variant != "fp32"
    )
    return infos[0] if infos else None
