"""One variant measured in a process of its own (``python -m workers.models.optimize.measure JOB``).

``compare`` starts this once per variant, one after another, so that each variant's
peak RSS is its own (not the sum of every model loaded so far, nor TensorFlow's when
only one variant needs it) and no variant runs while another is timed.

The job file (JSON) names the models folder, the variant, the folder of inputs (one
``<input>.npy`` each, memory-mapped so only the rows used are read), the batch sizes,
the seconds per batch size and the threads. This process writes ``result.json`` and
``outputs.npz`` (the variant's outputs for every input, for agreement) to ``out``.

Order matters for the figures: the model is loaded and timed on the first rows only,
the peak RSS is read, and only then are all inputs run for the outputs (that pass
would otherwise count the whole data set in the RSS).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Calls per batch size, whatever the time budget: a p99 of fewer is a guess.
MIN_CALLS = 5


def _memory_bytes(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from ``/proc/self/status``.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``execve`` from the
    process that forked us, so every variant would report at least the parent's peak
    (``compare`` holding all the inputs). ``VmHWM`` belongs to this program's own
    address space, which ``execve`` made new.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # elsewhere: the best there is


def _rows(inputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` rows of each input, repeated when there are fewer, in memory."""
    out = {}
    for k, v in inputs.items():
        rows = np.asarray(v[:n])
        if len(rows) < n:
            rows = np.concatenate([rows] * (n // max(1, len(rows)) + 1))[:n]
        out[k] = np.ascontiguousarray(rows)
    return out


def _timed_calls(runtime: Any, x: dict[str, np.ndarray], duration_s: float) -> list[float]:
    """Seconds per call, for ``duration_s`` and at least ``MIN_CALLS`` calls."""
    times: list[float] = []
    deadline = time.perf_counter() + duration_s
    while len(times) < MIN_CALLS or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        runtime.predict(x)
        times.append(time.perf_counter() - t0)
    return times


def batch_stats(batch: int, times: list[float]) -> dict[str, Any]:
    """Latency per call (ms) and inputs per second for one batch size."""
    ms = np.asarray(times) * 1000.0
    return {
        "batch": batch,
        "calls": len(times),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "per_input_ms": float(ms.mean() / batch),
        "inputs_per_s": float(batch * len(times) / max(ms.sum() / 1000.0, 1e-9)),
    }


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Time one variant as ``job`` says; write its outputs; return its figures."""
    from workers.models.registry import Registry, size_of

    entry = Registry(Path(job["models_dir"])).get(job["model"], job["variant"])
    inputs = {
        spec.name: np.load(Path(job["inputs"]) / f"{spec.name}.npy", mmap_mode="r")
        for spec in entry.info.inputs
    }
    t0 = time.perf_counter()
    from workers.models.runtimes import load_runtime

    if entry.info.runtime == "tensorflow":
        import tensorflow  # noqa: F401  (its import is not the model's load time)
    else:
        from workers.models.runtimes.litert import interpreter_class

        interpreter_class()
    import_ms = (time.perf_counter() - t0) * 1000.0
    rss_before = _memory_bytes("VmRSS")

    t0 = time.perf_counter()
    runtime = load_runtime(entry, threads=int(job["threads"]))
    load_ms = (time.perf_counter() - t0) * 1000.0
    one = _rows(inputs, 1)
    t0 = time.perf_counter()
    runtime.predict(one)
    first_ms = (time.perf_counter() - t0) * 1000.0

    batches = []
    for b in job["batch_sizes"]:
        x = _rows(inputs, b)
        runtime.predict(x)  # a new batch size re-plans the tensors once: not a call's cost
        batches.append(batch_stats(b, _timed_calls(runtime, x, float(job["duration_s"]))))
    peak_rss = _memory_bytes("VmHWM")
    delegated = None
    if entry.info.runtime == "litert":  # after the RSS: this builds one more interpreter
        from workers.models.optimize.delegation import heavy_ops_delegated

        delegated = heavy_ops_delegated(entry.path, int(job["threads"]))

    best = max(batches, key=lambda s: s["inputs_per_s"])["batch"]
    n = len(next(iter(inputs.values())))
    parts = [
        runtime.predict({k: np.ascontiguousarray(v[i : i + best]) for k, v in inputs.items()})
        for i in range(0, n, best)
    ]
    outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    np.savez(Path(job["out"]) / "outputs.npz", allow_pickle=False, **outputs)
    return {
        "variant": entry.info.variant,
        "runtime": entry.info.runtime,
        "version": entry.info.version,
        "file_bytes": size_of(entry.path),
        "import_ms": import_ms,
        "load_ms": load_ms,
        "first_run_ms": first_ms,
        "batches": batches,
        "rss_before_load_bytes": rss_before,
        "peak_rss_bytes": peak_rss,
        "xnnpack_heavy_ops": list(delegated) if delegated is not None else None,
    }


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    result = measure(job)
    (Path(job["out"]) / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
