"""``inferq models compare``: every variant of a model measured side by side, on this machine.

Per variant: file size, load time, first-run time, latency (mean, p50, p99) at batch 1
and at the batch size with the most inputs per second, that throughput, peak RSS, and
how its outputs agree with the reference variant's (fp32 by default) on the same
inputs: top-1 agreement for classifiers (outputs of shape [N, classes]), max and mean
absolute difference for every output; accuracy when labels are given.

Each variant runs in a fresh process (``measure``), one after another: its RSS is its
own, and nothing else of ours computes while it is timed. The inputs are the given
data, else the model's held-out examples (``<models>/<name>/data/heldout_x.npy`` and
``heldout_y.npy``), else seeded random values in [0, 1) (agreement then says how
alike the outputs are, not how right).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import BadInput, ConfigError
from tasks.schema import ModelInfo
from workers.models.optimize.calibration import read_arrays
from workers.models.registry import Registry

DEFAULT_SAMPLES = 512
DEFAULT_MAX_BATCH = 64
#: A variant that takes longer than this to measure is reported as failed, not waited for.
MEASURE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Agreement:
    """One output of a variant against the reference's."""

    output: str
    #: Share of inputs whose arg-max matches the reference's (class scores only), over
    #: the inputs where the reference has one top class (a tie has no top-1 to agree on).
    top1: float | None
    max_abs: float
    mean_abs: float
    #: Inputs the top-1 agreement was counted over (ties in the reference left out).
    top1_inputs: int = 0


@dataclass
class VariantFigures:
    """What was measured for one variant."""

    variant: str
    runtime: str
    version: str
    file_bytes: int
    import_ms: float
    load_ms: float
    first_run_ms: float
    batch1: dict[str, Any]
    best: dict[str, Any]
    batches: list[dict[str, Any]]
    rss_before_load_bytes: int
    peak_rss_bytes: int
    #: [heavy ops XNNPACK runs, heavy ops in all] for a LiteRT variant (``delegation``).
    xnnpack_heavy_ops: list[int] | None = None
    agreement: list[Agreement] = field(default_factory=list)
    accuracy: float | None = None

    @property
    def top1(self) -> float | None:
        return next((a.top1 for a in self.agreement if a.top1 is not None), None)


@dataclass
class Comparison:
    """A whole comparison: the variants, and what they were measured on."""

    model: str
    reference: str | None
    machine: str
    threads: int
    samples: int
    data: str
    variants: list[VariantFigures]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def figures(self, variant: str) -> VariantFigures:
        return next(v for v in self.variants if v.variant == variant)


def machine_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``) and core count: figures mean little without them."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def is_classifier(scores: np.ndarray, n_labels: int = 0) -> bool:
    """Whether an output reads as class scores: ``[N, classes]`` that the model labels, or
    whose rows are probabilities (in [0, 1], summing to 1). Other outputs (boxes,
    embeddings, logits without labels) get absolute errors only."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        return False
    if n_labels == scores.shape[1]:
        return True
    rows = scores.astype(np.float64)
    return bool(rows.min() >= 0 and rows.max() <= 1 and np.allclose(rows.sum(1), 1.0, atol=1e-2))


def agreement(
    reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], n_labels: int = 0
) -> list[Agreement]:
    """Each shared output against the reference's; top-1 agreement for class scores."""
    out = []
    for name, ref in reference.items():
        if name not in outputs:
            continue
        got = outputs[name].astype(np.float64)
        ref64 = ref.astype(np.float64)
        diff = np.abs(got - ref64)
        top1, counted = None, 0
        if is_classifier(ref, n_labels):
            # A reference whose best classes tie (a random-weight model's uniform softmax)
            # has no top-1: counting argmax's first index as one would report 100%.
            ranked = np.sort(ref64, axis=1)
            decided = ranked[:, -1] > ranked[:, -2]
            counted = int(decided.sum())
            if counted:
                top1 = float((got.argmax(1) == ref64.argmax(1))[decided].mean())
        out.append(Agreement(name, top1, float(diff.max()), float(diff.mean()), counted))
    return out


def accuracy(outputs: dict[str, np.ndarray], labels: np.ndarray, n_labels: int = 0) -> float | None:
    """Top-1 accuracy of the first class-score output; ``None`` when there is none."""
    for arr in outputs.values():
        if is_classifier(arr, n_labels):
            return float((arr.argmax(1) == labels[: len(arr)]).mean())
    return None


def default_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch`` (included even when not a power of two)."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max(1, max_batch)]


def compare_variants(
    registry: Registry,
    model: str,
    variants: Sequence[str] | None = None,
    *,
    reference: str = "fp32",
    data: Path | None = None,
    labels: Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    duration_s: float = 1.0,
    threads: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH,
    image_range: tuple[float, float] = (0.0, 1.0),
) -> Comparison:
    """Measure ``variants`` of ``model`` (all of its variants by default) and compare them."""
    if duration_s <= 0 or samples < 1 or max_batch < 1 or threads < 1:
        raise BadInput("--duration, --samples, --max-batch and --threads must be > 0")
    entries = {e.info.variant: e for e in registry.select([model])}
    names = list(variants or entries)
    unknown = [v for v in names if v not in entries]
    if unknown:
        raise BadInput(f"{model} has no variant {', '.join(unknown)} (it has {', '.join(entries)})")
    ref = reference if reference in entries else None
    if ref is not None:  # first: agreement needs its outputs, and the table reads from it
        names = [ref, *(v for v in names if v != ref)]
    infos = [entries[v].info for v in names]
    _same_inputs(infos)
    arrays, described = _inputs(registry, infos[0], data, samples, image_range)
    truth = _labels(registry, model, labels, data, len(next(iter(arrays.values()))))

    figures: list[VariantFigures] = []
    ref_outputs: dict[str, np.ndarray] | None = None
    with tempfile.TemporaryDirectory(prefix="inferq-compare-") as tmp:
        folder = Path(tmp) / "inputs"
        folder.mkdir()
        for k, v in arrays.items():
            np.save(folder / f"{k}.npy", v)
        measured = []
        for variant in names:
            result, outputs = _measure_in_child(
                registry, model, variant, folder, Path(tmp) / variant, max_batch, duration_s, threads
            )
            measured.append((result, outputs))
            if variant == ref:
                ref_outputs = outputs
        for result, outputs in measured:
            batches = result.pop("batches")
            fig = VariantFigures(
                **result,
                batch1=batches[0],
                best=max(batches, key=lambda s: s["inputs_per_s"]),
                batches=batches,
            )
            n_labels = len(entries[fig.variant].info.labels)
            if ref_outputs is not None:
                fig.agreement = agreement(ref_outputs, outputs, n_labels)
            if truth is not None:
                fig.accuracy = accuracy(outputs, truth, n_labels)
            figures.append(fig)
    return Comparison(
        model=model,
        reference=ref,
        machine=machine_name(),
        threads=threads,
        samples=len(next(iter(arrays.values()))),
        data=described,
        variants=figures,
    )


def _same_inputs(infos: list[ModelInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if [(s.name, s.shape) for s in info.inputs] != [(s.name, s.shape) for s in first.inputs]:
            raise BadInput(
                f"{info.key} takes {[s.describe() for s in info.inputs]} but {first.key} takes "
                f"{[s.describe() for s in first.inputs]}: variants compared on one data set must match"
            )


def _inputs(
    registry: Registry,
    info: ModelInfo,
    data: Path | None,
    samples: int,
    image_range: tuple[float, float],
) -> tuple[dict[str, np.ndarray], str]:
    if data is not None:
        return read_arrays(data, info.inputs, limit=samples, image_range=image_range), str(data)
    heldout = registry.data_dir(info.name) / "heldout_x.npy"
    if heldout.is_file():
        return read_arrays(heldout, info.inputs, limit=samples), str(heldout)
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in info.inputs:
        shape = tuple(1 if d is None else d for d in spec.shape)
        arrays[spec.name] = rng.random((samples, *shape)).astype(spec.dtype)
    return arrays, f"{samples} random inputs in [0, 1) (seed 0): no held-out data for {info.name}"


def _labels(
    registry: Registry, model: str, labels: Path | None, data: Path | None, n: int
) -> np.ndarray | None:
    if labels is None and data is None:
        heldout = registry.data_dir(model) / "heldout_y.npy"
        labels = heldout if heldout.is_file() else None
    if labels is None:
        return None
    try:
        y = np.load(labels, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadInput(f"labels {labels}: not a plain numeric .npy file ({exc})") from None
    if y.ndim != 1 or len(y) < n:
        raise BadInput(
            f"labels {labels}: expected one class index per input ({n}), got shape {list(y.shape)}"
        )
    return np.asarray(y[:n])


def _measure_in_child(
    registry: Registry,
    model: str,
    variant: str,
    inputs: Path,
    out: Path,
    max_batch: int,
    duration_s: float,
    threads: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out.mkdir()
    job = {
        "models_dir": str(registry.root.resolve()),
        "model": model,
        "variant": variant,
        "inputs": str(inputs),
        "batch_sizes": default_batch_sizes(max_batch),
        "duration_s": duration_s,
        "threads": threads,
        "out": str(out),
    }
    (out / "job.json").write_text(json.dumps(job))
    root = Path(__file__).resolve().parents[3]  # the folder holding ``workers``: run as we were
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "workers.models.optimize.measure", str(out / "job.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=MEASURE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"measuring {model}:{variant} took over {MEASURE_TIMEOUT_S:.0f} s; stopped"
        ) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"measuring {model}:{variant} failed (exit {proc.returncode}): {last}")
    result = json.loads((out / "result.json").read_text())
    with np.load(out / "outputs.npz") as z:
        outputs = {k: z[k] for k in z.files}
    return result, outputs
