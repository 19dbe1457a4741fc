"""``bench --compare``: the configurations run side by side under the same load, each named.

Both sides of the ``batching`` dimension are given to the worker explicitly. Left to
the variant's ``meta.json``, "batching on" would be whatever ``tune --apply`` last
wrote there (possibly a batch of 1), and the two rows could measure the same thing.

The ``cache`` dimension shows nothing without repeated inputs (every fresh input is a
miss), so unless ``--repeat-fraction`` is given, a comparison over it repeats half.
"""

from __future__ import annotations

from dataclasses import dataclass

from ops.bench.managed import WorkerConfig
from tasks.schema import ModelInfo

#: "batching on": a model's default batch limits (``ModelInfo``'s, when its meta.json sets none).
BATCH_ON = WorkerConfig("", max_batch_size=ModelInfo.max_batch_size, max_wait_ms=ModelInfo.max_wait_ms)
#: "batching off": one job per batch, nothing waited for.
BATCH_OFF = WorkerConfig("", max_batch_size=1, max_wait_ms=0.0)
#: The share of repeated inputs when ``cache`` is compared and ``--repeat-fraction`` is not given.
CACHE_REPEAT_FRACTION = 0.5


@dataclass(frozen=True)
class Configuration:
    """One row of a comparison: the worker to start, and whether the cache is bypassed."""

    worker: WorkerConfig
    no_cache: bool = False

    def label(self) -> str:
        return self.worker.label() + (", cache off" if self.no_cache else ", cache on")


def configurations(dims: set[str], default_variant: str, variants: list[str]) -> list[Configuration]:
    """Every combination of the compared dimensions (``dims``), in a stable order."""
    vs = variants if "variant" in dims else [default_variant]
    batching = [BATCH_ON, BATCH_OFF] if "batching" in dims else [None]
    caches = [False, True] if "cache" in dims else [False]
    out: list[Configuration] = []
    for v in vs:
        for b in batching:
            worker = WorkerConfig(v) if b is None else WorkerConfig(v, b.max_batch_size, b.max_wait_ms)
            out.extend(Configuration(worker, nc) for nc in caches)
    return out


def repeat_fraction(dims: set[str], given: float | None) -> float:
    """The share of jobs that resend an earlier input: as given, else enough to show the cache."""
    if given is not None:
        return given
    return CACHE_REPEAT_FRACTION if "cache" in dims else 0.0
