"""Claims between producers, and what workers tell everyone: announcements, heartbeats, stubs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tasks import constants as C
from tasks.schema import ModelInfo
from tasks.wire.version import VERSION, as_int


class Claim:
    """The in-flight claim's value: ``<v>:<unix time on Redis's clock>:<model:variant>``.

    Written and read by ``tasks/lua/claim.lua``; this is the same format in Python,
    for tests and tools. A value in another version is treated as stale (taken over);
    a bare time (claims before they had a version) is version 1.
    """

    @staticmethod
    def encode(at: float, model_key: str = "") -> str:
        return f"{VERSION}:{at:.6f}:{model_key}"

    @staticmethod
    def parse(raw: bytes | str | None) -> float | None:
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        version, sep, rest = text.partition(":")
        if not sep:
            version, rest = "1", text
        if version != str(VERSION):
            return None
        at = rest.partition(":")[0]
        try:
            return float(at)
        except ValueError:
            return None

    @staticmethod
    def model_key(raw: bytes | str | None) -> str:
        """The ``model:variant`` a claim names ("" for claims without one)."""
        if raw is None:
            return ""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        parts = text.split(":", 2)
        return parts[2] if len(parts) == 3 else ""


class ModelAnnouncement:
    """A served model variant's description, in the ``inferq:models`` hash (field ``model:variant``)."""

    @staticmethod
    def encode(info: ModelInfo) -> bytes:
        return orjson.dumps({"v": VERSION, **info.to_dict()})

    @staticmethod
    def parse(raw: bytes | str) -> ModelInfo | None:
        """None for an entry this reader cannot use (another version, or malformed)."""
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict) or doc.get("v", VERSION) != VERSION:
                return None
            return ModelInfo.from_dict(doc)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class WorkerBeat:
    """A live worker's heartbeat, in the ``inferq:workers`` hash (field: its hostname).

    ``stats`` are the worker's counters and recent latencies (``workers/serving/metrics.py``
    ``snapshot``), flattened into the document.
    """

    hostname: str
    pid: int
    models: tuple[str, ...]
    started_at: float
    seen_at: float
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.stats,
            "hostname": self.hostname,
            "pid": self.pid,
            "models": sorted(self.models),
            "started_at": self.started_at,
            "seen_at": self.seen_at,
        }

    def encode(self) -> bytes:
        return orjson.dumps({"v": VERSION, **self.to_dict()})

    @classmethod
    def parse(cls, raw: bytes | str) -> WorkerBeat | None:
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict) or doc.get("v", VERSION) != VERSION:
                return None
            own = ("v", "hostname", "pid", "models", "started_at", "seen_at")
            return cls(
                hostname=str(doc["hostname"]),
                pid=int(doc["pid"]),
                models=tuple(str(m) for m in doc["models"]),
                started_at=float(doc.get("started_at", 0.0)),
                seen_at=float(doc.get("seen_at", 0.0)),
                stats={k: v for k, v in doc.items() if k not in own},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def alive(self, now: float) -> bool:
        """Seen within three heartbeats."""
        return now - self.seen_at <= 3 * C.WORKER_HEARTBEAT_S


@dataclass(frozen=True)
class OversizedStub:
    """What the worker's fetch (``tasks/lua/fetch.lua``) leaves in place of a message over
    ``INFERQ_MAX_MESSAGE_BYTES``: its size and the limit, its task id, and kombu's
    delivery fields, so the job is answered ``PayloadTooLarge`` without reading it.

    Only ever written in Lua; ``MARK`` is the field that tells it from a kombu envelope.
    """

    MARK = "inferq_oversized"

    size: int
    limit: int

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> OversizedStub | None:
        size = envelope.get(cls.MARK)
        if size is None:
            return None
        limit = envelope.get("inferq_limit")
        return cls(as_int(size), as_int(limit))
