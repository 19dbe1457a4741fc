"""``inferq worker --concurrency auto``: the choice of processes x threads x batch size.

Pure: cores (``cores.py``) x the models' measured costs (``calibrate.py``) → a ``Plan``
with its reason in words, so the rule is tested without a model or a machine, and
``inferq tune`` can print it beside what it measured. Kept apart from the measuring so
that this rule, and the constants it is tuned by, import no model, runtime or numpy.

The rule, from where a worker's time goes (``docs/benchmarks.md``, "Through the
system"): besides the model call, a worker spends about ``WORKER_MS_PER_JOB`` of
Python per job and ``WORKER_MS_PER_BATCH`` per batch (the Redis calls that fetch,
store and ack it), all under one GIL. For a *light* model (the model is under
``HEAVY_SHARE`` of a job's worker time) that Python is the cost, and only processes
run it in parallel: one process per core, one thread each, and the batch size whose
cost per job is within ``BATCH_TOLERANCE`` of the best. For a *heavy* model the model
call is the cost: threads shorten each batch (latency) and keep one copy of the model
per process, so a heavy model gets as many XNNPACK threads as still run it at least
``THREAD_EFFICIENCY`` x threads faster, and fewer processes (cores / threads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The worker's own CPU per job besides the model call (decode, validate, result
#: document, events): ~0.17-0.2 ms in the py-spy profile of docs/benchmarks.md.
WORKER_MS_PER_JOB = 0.2
#: The worker's CPU per batch besides the model: the fetch, store and ack Lua calls and
#: one ``task.multi`` event message, about four round trips.
WORKER_MS_PER_BATCH = 1.0
#: A batch's model call adds to the latency of every job in it: no batch size whose one
#: call takes longer than this (on the threads chosen) is picked or even measured.
BATCH_COMPUTE_BUDGET_MS = 25.0
#: A model taking at least this share of a job's worker time is heavy.
HEAVY_SHARE = 0.5
#: The smallest batch size whose worker time per job is within this of the best one's:
#: a bigger batch costs latency (and prefetch) for less than this.
BATCH_TOLERANCE = 0.10
#: More threads for a heavy model only while they run it this efficiently (speed-up
#: over one thread / threads); below it, processes use the cores better.
THREAD_EFFICIENCY = 0.75


@dataclass(frozen=True)
class ModelCost:
    """What calibration measured for one model variant."""

    key: str
    #: batch size → ms of model call per input, one thread.
    per_input_ms: dict[int, float]
    #: threads → ms of one batch-1 call (heavy models only; 1 is the one-thread figure).
    batch1_ms_by_threads: dict[int, float] = field(default_factory=dict)
    #: ``max_batch_size`` that ``inferq tune --apply`` wrote into the model's meta.json.
    tuned_batch: int | None = None
    #: Why nothing was measured (a dynamic input shape), if so.
    skipped: str = ""
    #: Why threads were not measured for a heavy model, if so.
    threads_skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCost:
        return cls(
            key=str(d["key"]),
            per_input_ms={int(k): float(v) for k, v in d["per_input_ms"].items()},
            batch1_ms_by_threads={int(k): float(v) for k, v in d.get("batch1_ms_by_threads", {}).items()},
            tuned_batch=None if d.get("tuned_batch") is None else int(d["tuned_batch"]),
            skipped=str(d.get("skipped", "")),
            threads_skipped=str(d.get("threads_skipped", "")),
        )


@dataclass(frozen=True)
class Plan:
    """What ``--concurrency auto`` runs, and why."""

    processes: int
    threads: int
    #: ``--max-batch-size`` for every model; ``None``: each model's own (meta.json).
    max_batch_size: int | None
    cores: float
    reason: str

    def describe(self) -> str:
        batch = (
            "each model's own batch size" if self.max_batch_size is None else f"batch {self.max_batch_size}"
        )
        return (
            f"{self.processes} process{'es' if self.processes != 1 else ''} x {self.threads} "
            f"thread{'s' if self.threads != 1 else ''}, {batch}: {self.reason}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def worker_ms_per_job(cost_ms: float, batch: int) -> float:
    """A job's worker time at ``batch``: its model call, its own Python, its share of the batch's."""
    return cost_ms + WORKER_MS_PER_JOB + WORKER_MS_PER_BATCH / batch


def best_batch(cost: ModelCost, speedup: float = 1.0) -> int:
    """The smallest measured batch size within ``BATCH_TOLERANCE`` of the least worker
    time per job, among those whose one call fits ``BATCH_COMPUTE_BUDGET_MS``."""
    fits = {
        b: ms for b, ms in cost.per_input_ms.items() if b == 1 or b * ms / speedup <= BATCH_COMPUTE_BUDGET_MS
    }
    if not fits:
        return 1
    per_job = {b: worker_ms_per_job(ms, b) for b, ms in fits.items()}
    least = min(per_job.values())
    return min(b for b, t in per_job.items() if t <= least * (1 + BATCH_TOLERANCE))


def model_share(cost: ModelCost, batch: int) -> float:
    """The model call's share of a job's worker time at ``batch``."""
    ms = cost.per_input_ms[batch]
    return ms / worker_ms_per_job(ms, batch)


def best_threads(cost: ModelCost, cores: int) -> tuple[int, float]:
    """The most threads (up to ``cores``) still ``THREAD_EFFICIENCY`` efficient, and their speed-up."""
    one = cost.batch1_ms_by_threads.get(1) or cost.per_input_ms.get(1)
    chosen, speedup = 1, 1.0
    if not one:
        return chosen, speedup
    for t, ms in sorted(cost.batch1_ms_by_threads.items()):
        if 1 < t <= cores and ms > 0 and (one / ms) / t >= THREAD_EFFICIENCY:
            chosen, speedup = t, one / ms
    return chosen, speedup


def choose_plan(
    cores: float,
    costs: Sequence[ModelCost],
    *,
    threads: int | None = None,
    max_batch_size: int | None = None,
) -> Plan:
    """Processes x threads x batch size for ``cores`` and the models' measured ``costs``.

    ``threads`` or ``max_batch_size`` given by the operator are kept and the rest
    chosen around them. The heaviest model (most ms per input at batch 1) decides
    processes and threads; the batch size is the models' best one (see ``_choose_batch``).
    """
    usable = max(1, math.floor(cores + 1e-9))
    on = f"{_cores_text(cores)}"
    measured = [c for c in costs if c.per_input_ms and not c.skipped]
    if not measured:
        t = threads or 1
        why = "; ".join(f"{c.key}: {c.skipped}" for c in costs if c.skipped) or "no model to measure"
        return Plan(
            max(1, usable // t),
            t,
            max_batch_size,
            cores,
            f"nothing measured ({why}): one process per core on {on}",
        )
    heaviest = max(measured, key=lambda c: c.per_input_ms[min(c.per_input_ms)])
    b1 = best_batch(heaviest)
    share = model_share(heaviest, b1)
    heavy = share >= HEAVY_SHARE
    ms = heaviest.per_input_ms[b1]
    weight = (
        f"{heaviest.key} is {'heavy' if heavy else 'light'}: its model call is {share:.0%} of a job's "
        f"worker time ({ms:.3g} of {worker_ms_per_job(ms, b1):.3g} ms per job at batch {b1})"
    )
    if threads is not None:
        t, speedup = threads, 1.0
        shape = f"--threads {t} given, so {max(1, usable // t)} process(es) on {on}"
    elif heavy:
        t, speedup = best_threads(heaviest, usable)
        tried = {k: v for k, v in heaviest.batch1_ms_by_threads.items() if k > 1}
        if t > 1:
            shape = (
                f"{t} threads run it {speedup:.1f}x faster ({speedup / t:.0%} efficient), so one process "
                f"per {t} cores ({on}) with {t} threads: each batch finishes sooner than on one thread, "
                "and one copy of the model serves them"
            )
        elif tried:
            k, v = max(tried.items())
            one = heaviest.batch1_ms_by_threads.get(1) or heaviest.per_input_ms[1]
            shape = (
                f"but {k} threads run it at only {one / v:.1f}x one thread's speed ({one / v / k:.0%} efficient, under "
                f"{THREAD_EFFICIENCY:.0%}), so one single-thread process per core ({on})"
            )
        elif heaviest.threads_skipped and usable > 1:
            shape = f"threads not measured ({heaviest.threads_skipped}), so one single-thread process per core ({on})"
        else:
            shape = f"one core to run it on ({on}), so one single-thread process"
    else:
        t, speedup = 1, 1.0
        shape = (
            f"the worker's Python is the cost, and only processes run it in parallel: one per core ({on}), "
            "1 thread each"
        )
    processes = max(1, usable // t)
    batch, batch_why = _choose_batch(measured, speedup, max_batch_size)
    return Plan(processes, t, batch, cores, f"{weight}; {shape}; {batch_why}")


def _choose_batch(measured: Sequence[ModelCost], speedup: float, given: int | None) -> tuple[int | None, str]:
    """``--max-batch-size`` (one for every model the worker serves) and why.

    ``None`` leaves each model its own (meta.json): when every model carries the batch
    size ``inferq tune --apply`` measured, or when the models' best sizes differ, since
    one size for all would cost the light model throughput or the heavy one latency.
    """
    if given is not None:
        return given, f"--max-batch-size {given} given"
    if all(c.tuned_batch for c in measured):
        return None, "each model keeps the batch size `inferq tune --apply` measured (meta.json)"
    picks = {c.key: best_batch(c, speedup) for c in measured}
    if len(set(picks.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in picks.items())
        return None, (
            f"the models' best batch sizes differ ({listed}) and --max-batch-size is one for all, "
            "so each model keeps its own (meta.json; `inferq tune --apply` sets it per model)"
        )
    c = measured[0]
    b = picks[c.key]
    costs = ", ".join(f"{c.per_input_ms[k]:.3g} at {k}" for k in sorted(c.per_input_ms))
    if b == 1:
        return 1, (
            f"batch 1 (no batching): larger batches make its model call no cheaper per input "
            f"(ms per input: {costs}; a size whose call passes {BATCH_COMPUTE_BUDGET_MS:g} ms is never chosen)"
        )
    return b, (
        f"batch {b}: about {WORKER_MS_PER_BATCH:g} ms of Redis calls per batch is shared by up to {b} jobs "
        f"(model ms per input: {costs}; the smallest batch within {BATCH_TOLERANCE:.0%} of the best "
        "worker time per job)"
    )


def _cores_text(cores: float) -> str:
    return f"{cores:g} core{'s' if cores != 1 else ''}"
