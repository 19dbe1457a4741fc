"""The model registry: a folder of models, each with variants and a ``meta.json``.

Layout::

    models/<name>/<variant>/meta.json       # ModelInfo + file, sha256, created_at
    models/<name>/<variant>/model.tflite    # or saved_model/ for a SavedModel
    models/<name>/data/*.npy                # optional held-out data (examples)

Reading the registry needs neither TensorFlow nor LiteRT; only ``add`` (which reads
a file's tensors) and loading a runtime do.

Everything a model entry names must lie inside the models folder once symlinks are
followed: a ``meta.json`` whose ``file`` is ``../../etc/passwd`` or an absolute path,
or a symlink that leads out, is refused (``ModelPathRefused``); listing the folder
logs the refusal and goes on with the other models.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import BadInput, ConfigError, ModelNotFound
from tasks.keys import check_name
from tasks.schema import ModelInfo

META_FILE = "meta.json"
TFLITE_FILE = "model.tflite"
SAVEDMODEL_DIR = "saved_model"

log = logging.getLogger(__name__)


class ModelPathRefused(ConfigError):
    """A model entry names a file outside the models folder (``..``, absolute, a symlink)."""


@dataclass(frozen=True)
class ModelEntry:
    """One model variant on disk."""

    info: ModelInfo
    path: Path  # the .tflite file or the SavedModel folder
    sha256: str

    @property
    def key(self) -> str:
        return self.info.key


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and bytes, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Registry:
    """Reads and writes the models folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def require(self) -> Path:
        """The models folder, absolute; ``ConfigError`` saying where it looked when it does
        not exist (a relative ``INFERQ_MODELS_DIR`` is read from the current directory)."""
        root = self.root.resolve()
        if not root.is_dir():
            relative = (
                "" if self.root.is_absolute() else f" (INFERQ_MODELS_DIR={self.root}, from {Path.cwd()})"
            )
            raise ConfigError(
                f"the models folder {root}{relative} does not exist; set INFERQ_MODELS_DIR to the "
                "folder that holds your models, or build the examples there: inferq models build-examples"
            )
        return root

    def entries(self) -> list[ModelEntry]:
        """Every model variant in the folder, less those refused (each refusal is logged)."""
        if not self.root.is_dir():
            return []
        return self._load_each(sorted(self.root.glob(f"*/*/{META_FILE}")))[0]

    def get(self, name: str, variant: str) -> ModelEntry:
        check_name("model", name)
        check_name("variant", variant)
        meta = self.root / name / variant / META_FILE
        if not meta.is_file():
            known = ", ".join(e.key for e in self.entries()) or "none"
            raise ModelNotFound(f"no model {name}:{variant} in {self.root} (known: {known})")
        return self._load(meta)

    def select(self, specs: list[str] | None) -> list[ModelEntry]:
        """Entries for ``["digits", "mobilenet_v2:int8"]``; all of them for ``None``."""
        self.require()
        if not specs:
            found = self.entries()
            if not found:
                raise ConfigError(f"no models in {self.root.resolve()}; run `inferq models build-examples`")
            return found
        out: list[ModelEntry] = []
        for spec in specs:
            name, _, variant = spec.partition(":")
            if variant:
                out.append(self.get(name, variant))
                continue
            check_name("model", name)
            variants = sorted((self.root / name).glob(f"*/{META_FILE}"))
            if not variants:
                known = sorted({e.info.name for e in self.entries()})
                raise ModelNotFound(f"no model {name!r} in {self.root.resolve()} (known: {known})")
            loaded, refused = self._load_each(variants)
            if not loaded:
                raise refused[0]
            out.extend(loaded)
        return out

    def data_dir(self, name: str) -> Path:
        return self.root / check_name("model", name) / "data"

    def write(
        self,
        info: ModelInfo,
        source: Path,
        *,
        move: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> ModelEntry:
        """Place a model file or folder under ``<root>/<name>/<variant>/`` with its meta."""
        check_name("model", info.name)
        check_name("variant", info.variant)
        # Names are plain, but <root>/<name> may be a symlink that leads elsewhere.
        resolve_inside(self.root, f"{info.name}/{info.variant}")
        dest_dir = self.root / info.name / info.variant
        dest = dest_dir / (SAVEDMODEL_DIR if source.is_dir() else TFLITE_FILE)
        if source.resolve() == dest.resolve():
            raise BadInput(f"{source} is already {info.key}'s model file; give a file outside {self.root}")
        dest_dir.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        if move:
            shutil.move(str(source), dest)
        elif source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copyfile(source, dest)
        digest = sha256_of(dest)
        meta = info.to_dict()
        meta.update(
            {
                "file": dest.name,
                "sha256": digest,
                "size_bytes": size_of(dest),
                "version": info.version or digest[:12],
                "created_at": time.time(),
            }
        )
        meta.update(extra or {})
        # Replaced, not written through: readers never see half a file, and a meta.json
        # that is a symlink is swapped for a file rather than overwriting its target.
        tmp = dest_dir / f".{META_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, dest_dir / META_FILE)
        return self._load(dest_dir / META_FILE)

    def _load_each(self, metas: list[Path]) -> tuple[list[ModelEntry], list[ModelPathRefused]]:
        """Load each entry; refused ones are logged and returned apart, broken ones raise."""
        loaded, refused = [], []
        for meta in metas:
            try:
                loaded.append(self._load(meta))
            except ModelPathRefused as exc:
                log.error("%s", exc)
                refused.append(exc)
        return loaded, refused

    def _load(self, meta_path: Path) -> ModelEntry:
        root = self.root.resolve()
        _refuse_outside(root, meta_path, f"model metadata {meta_path}")
        try:
            meta = json.loads(meta_path.read_text())
            info = ModelInfo.from_dict(meta)
            path = meta_path.parent / meta["file"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"broken model metadata {meta_path}: {exc}") from None
        what = f"model file {meta['file']!r} named by {meta_path}"
        _refuse_outside(root, path, what)
        if not path.exists():
            raise ConfigError(f"model file {path} named by {meta_path} does not exist")
        if path.is_dir():  # a SavedModel: no file in it may lead out either
            for folder, dirs, files in os.walk(path):
                for link in (Path(folder) / n for n in dirs + files):
                    if link.is_symlink():
                        _refuse_outside(root, link, f"{link} in {what}")
        return ModelEntry(info=info, path=path, sha256=str(meta.get("sha256", "")))


def _refuse_outside(root: Path, path: Path, what: str) -> None:
    """Raise ``ModelPathRefused`` unless ``path``, symlinks followed, lies inside ``root``."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise ModelPathRefused(f"{what} cannot be resolved inside the models folder {root}: {exc}") from None
    if root not in real.parents:
        raise ModelPathRefused(f"{what} resolves to {real}, outside the models folder {root}: refused")


def resolve_inside(root: Path, name: str) -> Path:
    """``root/name`` if it stays inside ``root``; refuse ``../`` and absolute names."""
    candidate = (root / name).resolve()
    if root.resolve() not in candidate.parents:
        raise BadInput(f"{name!r} escapes the models folder {root}")
    return candidate
