"""What travels: model descriptions, job requests, results with timing, job status.

All of it is plain JSON/msgpack data at the edges; these dataclasses are the typed
view each side works with.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from tasks import constants as C
from tasks.codec import array_from_json, array_to_json
from tasks.errors import BadInput


class JobStatus(StrEnum):
    """What ``Client.status`` reports; never blocks."""

    PENDING = "pending"  # nothing known about this id (never sent, or long forgotten)
    QUEUED = "queued"  # sent, no worker has started it
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    EXPIRED = "expired"  # passed its deadline before it ran


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
class Request:
    """The single argument of the ``inferq.predict`` task."""

    model: str
    variant: str
    inputs: Any  # msgpack bytes from our client, or a JSON mapping from others
    version: str | None = None
    enqueued_at: float = field(default_factory=time.time)
    cache: bool = True
    deadline_at: float | None = None  # unix time after which the job is not computed

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": C.WIRE_VERSION,
            "model": self.model,
            "variant": self.variant,
            "version": self.version,
            "inputs": self.inputs,
            "enqueued_at": self.enqueued_at,
            "cache": self.cache,
            "deadline_at": self.deadline_at,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Request:
        """Parse a task argument, naming what was expected when it is malformed."""
        if not isinstance(obj, dict):
            raise BadInput(
                f"job argument must be a map with model, variant and inputs, got {type(obj).__name__}"
            )
        if obj.get("v", C.WIRE_VERSION) != C.WIRE_VERSION:
            raise BadInput(f"job wire version must be {C.WIRE_VERSION}, got {obj.get('v')!r}")
        missing = [k for k in ("model", "variant", "inputs") if k not in obj]
        if missing:
            raise BadInput(f"job is missing field(s) {missing}; expected model, variant and inputs")
        for k in ("model", "variant"):
            if not isinstance(obj[k], str):
                raise BadInput(f"job field {k!r} must be a string, got {type(obj[k]).__name__}")
        enqueued_at = _stamp(obj, "enqueued_at")
        version = obj.get("version")
        return cls(
            model=obj["model"],
            variant=obj["variant"],
            inputs=obj["inputs"],
            version=str(version) if version is not None else None,
            enqueued_at=time.time() if enqueued_at is None else enqueued_at,
            cache=bool(obj.get("cache", True)),
            deadline_at=_stamp(obj, "deadline_at"),
        )


def _stamp(obj: dict[str, Any], name: str) -> float | None:
    """A unix-time field as a float; absent or not a number is None."""
    value = obj.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # a JSON integer too big for a float
        raise BadInput(
            f"job field {name!r} must be a unix time in seconds, got an integer too large"
        ) from None


@dataclass
class Timing:
    """Where a job's time went. Stamps are unix seconds; durations milliseconds.

    ``queue_ms`` spans two clocks (producer's ``enqueued_at``, worker's
    ``received_at``): across hosts it is only as good as their clock sync.
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
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclass
class Result:
    """A finished job as the client returns it."""

    job_id: str
    model: str
    variant: str
    version: str
    outputs: dict[str, np.ndarray]
    timing: Timing
    cached: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The JSON document stored in the result backend (what ``AsyncResult`` reads)."""
        return {
            "v": C.WIRE_VERSION,
            "model": self.model,
            "variant": self.variant,
            "version": self.version,
            "outputs": {k: array_to_json(v) for k, v in self.outputs.items()},
            "timing": self.timing.to_dict(),
        }

    @classmethod
    def from_wire(cls, job_id: str, obj: dict[str, Any], *, cached: bool) -> Result:
        return cls(
            job_id=job_id,
            model=obj["model"],
            variant=obj["variant"],
            version=str(obj["version"]),
            outputs={k: array_from_json(v) for k, v in obj["outputs"].items()},
            timing=Timing.from_dict(obj["timing"]),
            cached=cached,
        )

    def to_json(self) -> dict[str, Any]:
        """For ``--json`` output: arrays as nested lists, readable by any tool."""
        return {
            "job_id": self.job_id,
            "model": self.model,
            "variant": self.variant,
            "version": self.version,
            "cached": self.cached,
            "outputs": {k: v.tolist() for k, v in self.outputs.items()},
            "timing": self.timing.to_dict(),
        }
