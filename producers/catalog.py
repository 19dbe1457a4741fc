"""Which models exist, in which variants and versions, with which inputs.

Workers announce the models they load in Redis; a producer reads that (refreshed
every few seconds) and falls back to a local models folder, so a web backend can
submit before it has ever seen a worker if it shares the folder. The same read takes
the workers' heartbeats, so the catalogue also knows which variants a live worker
serves right now (``served``), without a round trip of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import redis
import redis.asyncio

from producers.served import served_by
from tasks import constants as C
from tasks.errors import ModelNotFound
from tasks.keys import check_name
from tasks.schema import ModelInfo
from tasks.wire import ModelAnnouncement

#: How long a read of the announced models is reused.
REFRESH_S = 5.0


class CatalogView:
    """The catalogue's answers from what was last read (no Redis I/O; both clients share it)."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._models: dict[str, ModelInfo] = {}
        self._read_at = 0.0
        #: The variants live workers served at the last read; None before any read.
        self.served: set[str] | None = None

    def stale(self, refresh: bool = False) -> bool:
        """Whether the announcements must be read again before answering."""
        return refresh or not self._models or time.monotonic() - self._read_at > REFRESH_S

    def load(self, raw: dict[bytes, bytes], beats: dict[bytes, bytes] | None = None) -> dict[str, ModelInfo]:
        """Take a fresh read of the announcements hash (and of the heartbeats hash)."""
        parsed = {k.decode(): ModelAnnouncement.parse(v) for k, v in raw.items()}
        self._models = {k: info for k, info in parsed.items() if info is not None}
        if beats is not None:
            self.served = served_by(beats)
        self._read_at = time.monotonic()
        return self._models

    @property
    def announced(self) -> dict[str, ModelInfo]:
        return self._models

    def cached(self, model: str, variant: str | None = None) -> ModelInfo | None:
        """What ``info`` would answer, when a fresh read of the announcements holds it;
        None when answering needs Redis or the models folder. (No I/O: the client calls it
        on the caller's thread, sparing a submit a hop to its Redis threads.)"""
        if self.stale():
            return None
        info = self._models.get(f"{model}:{variant or 'fp32'}")
        if info is not None:
            check_name("model", model)
        return info

    def lookup(self, model: str, variant: str | None, *, final: bool) -> ModelInfo | None:
        """A model variant's description from the last read and the local models folder;
        ``variant=None`` picks fp32, or the first there is. None (when not ``final``):
        read the announcements again and ask once more; ``final``: ``ModelNotFound``."""
        check_name("model", model)
        if variant is not None:
            check_name("variant", variant)
        announced = [k.split(":", 1)[1] for k in self._models if k.split(":", 1)[0] == model]
        variants = sorted(set(announced) | set(self._local_variants(model)))
        if not variants or (variant is not None and variant not in variants):
            if not final:
                return None
            if not variants:
                names = sorted({k.split(":", 1)[0] for k in self._models})
                folder = self.models_dir.resolve()
                missing = "" if folder.is_dir() else ", a folder that does not exist here"
                raise ModelNotFound(
                    f"unknown model {model!r}: no worker has announced it and it is not in "
                    f"{folder}{missing}; known models: {names or 'none'}"
                )
        variant = variant or ("fp32" if "fp32" in variants else variants[0])
        info = self._models.get(f"{model}:{variant}") or self._local_info(model, variant)
        if info is None:
            raise ModelNotFound(f"model {model!r} has no variant {variant!r}; it has {variants}")
        return info

    def _local_variants(self, model: str) -> list[str]:
        folder = self.models_dir / model
        return sorted(p.parent.name for p in folder.glob("*/meta.json")) if folder.is_dir() else []

    def _local_info(self, model: str, variant: str) -> ModelInfo | None:
        meta = self.models_dir / model / variant / "meta.json"
        if not meta.is_file():
            return None
        return ModelInfo.from_dict(orjson.loads(meta.read_bytes()))


class ModelCatalog(CatalogView):
    """The catalogue read with redis-py."""

    def __init__(self, backend: redis.Redis[bytes], models_dir: Path) -> None:
        super().__init__(models_dir)
        self.backend = backend

    def models(self, refresh: bool = False) -> dict[str, ModelInfo]:
        """Model variants announced by workers (``name:variant`` -> ``ModelInfo``)."""
        if self.stale(refresh):
            pipe = self.backend.pipeline(transaction=False)
            pipe.hgetall(C.MODELS_KEY)
            pipe.hgetall(C.WORKERS_KEY)
            return self.load(*pipe.execute())
        return self.announced

    def info(self, model: str, variant: str | None = None) -> ModelInfo:
        """A model variant's description; ``variant=None`` picks fp32, or the first there is."""
        self.models()
        found = self.lookup(model, variant, final=False)
        if found is None:
            self.models(refresh=True)
            found = self.lookup(model, variant, final=True)
        assert found is not None
        return found


class AsyncModelCatalog(CatalogView):
    """The catalogue read with ``redis.asyncio``."""

    def __init__(self, backend: redis.asyncio.Redis[bytes], models_dir: Path) -> None:
        super().__init__(models_dir)
        self.backend = backend

    async def models(self, refresh: bool = False) -> dict[str, ModelInfo]:
        if self.stale(refresh):
            pipe = self.backend.pipeline(transaction=False)
            pipe.hgetall(C.MODELS_KEY)
            pipe.hgetall(C.WORKERS_KEY)
            return self.load(*await pipe.execute())
        return self.announced

    async def info(self, model: str, variant: str | None = None) -> ModelInfo:
        await self.models()
        found = self.lookup(model, variant, final=False)
        if found is None:
            await self.models(refresh=True)
            found = self.lookup(model, variant, final=True)
        assert found is not None
        return found
