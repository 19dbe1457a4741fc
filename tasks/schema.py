"""The typed vocabulary both sides share: tensor specs, model descriptions, timing, job status.

How these travel (and the job, result and status forms built from them) is
``tasks/wire/``'s business.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class CancelOutcome(StrEnum):
    """What ``Client.cancel`` did."""

    CANCELLED = "cancelled"  # it was queued: it will not run, its status is ``cancelled``
    ALREADY_CANCELLED = "already_cancelled"
    RUNNING = "running"  # a worker has started it: nothing changed
    FINISHED = "finished"  # it has a result or a failure: nothing changed
    UNKNOWN = "unknown"  # nothing is known of this id: nothing changed
    #: queued, but other owners hold handles to the same job (the same input): left alone
    SHARED = "shared"


class JobStatus(StrEnum):
    """What ``Client.status`` reports (bounded in time, like every client call)."""

    #: Nothing known about this id: never sent, or its result expired from the cache.
    #: (An HTTP layer answers 404.)
    UNKNOWN = "unknown"
    PENDING = "unknown"  # the name before 0.2; an alias of UNKNOWN
    QUEUED = "queued"  # sent, no worker has started it
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    EXPIRED = "expired"  # passed its deadline before it ran
    CANCELLED = "cancelled"  # Client.cancel (or Celery's revoke) before a worker started it
    #: Queued longer than the visibility timeout with its queue empty and nothing held
    #: unacknowledged: its message is gone. Submitting the input again sends it anew.
    LOST = "lost"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output, as a client sees it.

    ``shape`` excludes the batch axis; ``None`` marks a dynamic dimension. ``dtype``
    is the logical dtype a client sends or receives; ``tensor_dtype`` and
    ``quantization`` describe the model's own tensor (int8 models take float32 in
    and the worker quantizes with ``scale``/``zero_point``).
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    tensor_dtype: str = ""
    quantization: tuple[float, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["quantization"] = (
            {"scale": self.quantization[0], "zero_point": self.quantization[1]} if self.quantization else None
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        q = d.get("quantization")
        return cls(
            name=d["name"],
            shape=tuple(None if s is None or s < 0 else int(s) for s in d["shape"]),
            dtype=d["dtype"],
            tensor_dtype=d.get("tensor_dtype") or d["dtype"],
            quantization=(float(q["scale"]), int(q["zero_point"])) if q else None,
        )

    def describe(self) -> str:
        dims = ",".join("?" if s is None else str(s) for s in self.shape)
        return f"{self.name}[{dims}]:{self.dtype}"


@dataclass(frozen=True)
class ModelInfo:
    """What a worker announces about one model variant (and a producer needs to send)."""

    name: str
    variant: str
    version: str
    runtime: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_bytes: int = 0
    labels: tuple[str, ...] = ()
    max_batch_size: int = 32
    max_wait_ms: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [s.to_dict() for s in self.inputs]
        d["outputs"] = [s.to_dict() for s in self.outputs]
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(
            name=d["name"],
            variant=d["variant"],
            version=str(d["version"]),
            runtime=d["runtime"],
            inputs=tuple(TensorSpec.from_dict(s) for s in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(s) for s in d["outputs"]),
            size_bytes=int(d.get("size_bytes", 0)),
            labels=tuple(d.get("labels") or ()),
            max_batch_size=int(d.get("max_batch_size", 32)),
            max_wait_ms=float(d.get("max_wait_ms", 2.0)),
        )

    @property
    def key(self) -> str:
        return f"{self.name}:{self.variant}"


@dataclass
class Timing:
    """Where a job's time went. Stamps are unix seconds; durations milliseconds.

    ``queue_ms`` spans two clocks (producer's ``enqueued_at``, worker's
    ``received_at``): across hosts it is only as good as their clock sync.

    A cache hit has a timing of its own (``served_from_cache``): from the submit to the
    stored result reaching the caller, with no queue, batch wait or compute, and
    ``batch_size`` 0; the timing of the job that computed the result is kept in
    ``computed`` (``computed_*`` in ``to_dict``). Reporting the computing job's numbers
    as the hit's own would claim a queue wait the caller never had.
    """

    enqueued_at: float
    received_at: float
    started_at: float
    finished_at: float
    queue_ms: float
    batch_wait_ms: float
    compute_ms: float
    processing_ms: float
    batch_size: int
    end_to_end_ms: float | None = None
    #: A cache hit's: the timing of the job that computed the result; None otherwise.
    computed: Timing | None = None

    @classmethod
    def build(
        cls,
        *,
        enqueued_at: float,
        received_at: float,
        started_at: float,
        compute_done_at: float,
        finished_at: float,
        batch_size: int,
    ) -> Timing:
        return cls(
            enqueued_at=enqueued_at,
            received_at=received_at,
            started_at=started_at,
            finished_at=finished_at,
            queue_ms=max(0.0, (received_at - enqueued_at) * 1e3),
            batch_wait_ms=max(0.0, (started_at - received_at) * 1e3),
            compute_ms=(compute_done_at - started_at) * 1e3,
            processing_ms=(finished_at - received_at) * 1e3,
            batch_size=batch_size,
        )

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, and this runs once per job.
        d: dict[str, Any] = {
            "enqueued_at": self.enqueued_at,
            "received_at": self.received_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "queue_ms": self.queue_ms,
            "batch_wait_ms": self.batch_wait_ms,
            "compute_ms": self.compute_ms,
            "processing_ms": self.processing_ms,
            "batch_size": self.batch_size,
        }
        if self.end_to_end_ms is not None:
            d["end_to_end_ms"] = self.end_to_end_ms
        if self.computed is not None:
            # Flat, numbers only, under names no older reader knows: its ``from_dict``
            # keeps the fields it knows and skips these.
            d.update({f"{COMPUTED}{k}": v for k, v in self.computed.to_dict().items()})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        if len(d) == len(_REQUIRED) and d.keys() == _REQUIRED:
            # A worker's timing, as it always comes (once per result): 0.7 µs, not 3.
            return cls(**d)
        fields = cls.__dataclass_fields__
        own = {k: v for k, v in d.items() if k in fields and k != "computed"}
        inner = {k.removeprefix(COMPUTED): v for k, v in d.items() if k.startswith(COMPUTED)}
        computed = cls.from_dict(inner) if inner.keys() >= _REQUIRED else None
        return cls(**own, computed=computed)

    def served_from_cache(self, asked_at: float, answered_at: float) -> Timing:
        """A cache hit's own timing: asked at ``asked_at`` (the submit), answered at
        ``answered_at`` (the stored result in the caller's hands); this timing, the
        computing job's, is kept as ``computed``."""
        computed = Timing(**{**self.__dict__, "end_to_end_ms": None, "computed": None})
        return Timing(
            enqueued_at=asked_at,
            received_at=answered_at,
            started_at=answered_at,
            finished_at=answered_at,
            queue_ms=0.0,
            batch_wait_ms=0.0,
            compute_ms=0.0,
            processing_ms=0.0,
            batch_size=0,
            end_to_end_ms=max(0.0, (answered_at - asked_at) * 1e3),
            computed=computed,
        )


#: ``to_dict``'s prefix for a cache hit's ``computed`` timing.
COMPUTED = "computed_"
_REQUIRED = frozenset(
    {
        "enqueued_at",
        "received_at",
        "started_at",
        "finished_at",
        "queue_ms",
        "batch_wait_ms",
        "compute_ms",
        "processing_ms",
        "batch_size",
    }
)
