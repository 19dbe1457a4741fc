"""``inferq submit`` and ``inferq result``: send inputs to a model, show a job's result.

``submit`` reads one input (or an .npy of many, sent in bulk with progress bars) and
prints the job id, or waits and prints the result; ``result`` shows a job's result by id,
or its status while it is queued or running. Both print results the same way: values to 4
significant digits and the timing of each stage (``short_number``, ``timing_lines``).

Kept apart from ``ops/cli.py``, like every other command (``models_cmd``, ``gateway_cmd``,
``status``...): the command line there builds the parser, turns expected errors into one
line and picks the module that runs a command; what a job command does and prints is a
concern of its own, imported only when that command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tasks.errors import JobNotFound
from tasks.schema import JobStatus, ModelInfo

if TYPE_CHECKING:  # for annotations only: importing the printers below need not load the client
    from producers.client import Client


def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    """Exit 0 once sent, or with the result (``--wait``); many inputs: 1 if any job failed."""
    from ops.input_files import is_many, read_input

    model, _, variant = args.model.partition(":")
    info = client.model_info(model, variant or None)
    x = read_input(args.input, info)
    if is_many(x, info):
        return _submit_many(args, client, info, x)
    job = client.submit(model, x, variant=info.variant, no_cache=args.no_cache, priority=args.priority)
    if not args.wait:
        doc = {
            "job_id": job.id,
            "model": info.name,
            "variant": info.variant,
            "cached": job.cached,
            "enqueued": job.enqueued,
        }
        print(json.dumps(doc) if args.json else f"{job.id} ({'cached' if job.cached else 'queued'})")
        return 0
    _print_result(job.wait(timeout=args.timeout), info.labels, as_json=args.json)
    return 0


def _submit_many(args: argparse.Namespace, client: Client, info: ModelInfo, xs: Any) -> int:
    """An .npy with one more leading axis than the model's input: bulk messages, progress bars."""
    from tqdm import tqdm

    quiet = args.json or not sys.stderr.isatty()
    with tqdm(total=len(xs), desc="submit", unit="job", disable=quiet, file=sys.stderr) as bar:
        jobs = client.submit_many(
            info.name,
            xs,
            variant=info.variant,
            chunk_size=args.chunk_size,
            no_cache=args.no_cache,
            priority=args.priority,
            progress=bar.update,
        )
    cached = sum(j.cached for j in jobs)
    if not args.wait:
        if args.json:
            print(
                json.dumps(
                    {
                        "job_ids": [j.id for j in jobs],
                        "cached": cached,
                        "enqueued": sum(j.enqueued for j in jobs),
                    }
                )
            )
        else:
            print("\n".join(j.id for j in jobs))
            print(f"{len(jobs)} jobs ({cached} cached)", file=sys.stderr)
        return 0
    with tqdm(total=len(jobs), desc="results", unit="job", disable=quiet, file=sys.stderr) as bar:
        bar.update(sum(j.done for j in jobs))
        results = client.wait_all(jobs, timeout=args.timeout, progress=bar.update)
    errors = [r for r in results if isinstance(r, Exception)]
    if args.json:
        print(
            json.dumps(
                [
                    r.to_json()
                    if not isinstance(r, Exception)
                    else {"error": type(r).__name__, "message": str(r)}
                    for r in results
                ]
            )
        )
    else:
        for j, r in zip(jobs, results, strict=True):
            if isinstance(r, Exception):
                print(f"{j.id}  {type(r).__name__}: {r}")
            else:
                flat = next(iter(r.outputs.values())).reshape(-1)
                top = int(flat.argmax())
                label = info.labels[top] if info.labels else top
                print(f"{j.id}  top-1 {label}  {'(cached)' if r.cached else ''}")
        print(
            f"{len(results)} jobs: {len(results) - len(errors)} ok, {len(errors)} failed, {cached} cached",
            file=sys.stderr,
        )
    return 1 if errors else 0


def cmd_result(args: argparse.Namespace, client: Client) -> int:
    """Exit 0 with the result (or the status of a job still queued or running); 2 for an
    unknown id, or a job that ended without a result (its error)."""
    if not args.wait:
        status = client.status(args.job_id)
        if status is JobStatus.UNKNOWN:
            raise JobNotFound(f"job {args.job_id} is unknown: never sent, or its result expired")
        if status in (JobStatus.QUEUED, JobStatus.RUNNING):
            print(json.dumps({"job_id": args.job_id, "status": status.value}) if args.json else status.value)
            return 0
    res = client.result(args.job_id, wait=args.wait, timeout=args.timeout)
    _print_result(res, (), as_json=args.json)
    return 0


def _print_result(res: Any, labels: tuple[str, ...], *, as_json: bool) -> None:
    """A result for people (values to 4 significant digits), or whole as JSON (``--json``)."""
    if as_json:
        print(json.dumps(res.to_json()))
        return
    print(f"job {res.job_id}: {res.model}:{res.variant} v{res.version}{' (cached)' if res.cached else ''}")
    for name, arr in res.outputs.items():
        flat = arr.reshape(-1)
        top = (
            f"  top-1 {labels[int(flat.argmax())] if labels else int(flat.argmax())}" if flat.size > 1 else ""
        )
        values = ", ".join(short_number(v) for v in flat[:10].tolist())
        more = ", ..." if flat.size > 10 else ""
        print(f"  {name} {list(arr.shape)} {arr.dtype}{top}: [{values}{more}]")
    for line in timing_lines(res.timing):
        print(f"  {line}")


def short_number(v: Any) -> str:
    """A value for people: integers whole, floats to 4 significant digits (0.9961, 1.2e-05)."""
    return str(v) if isinstance(v, (int, bool)) else f"{v:.4g}"


def timing_lines(t: Any) -> list[str]:
    """A result's timing for people; a cache hit's own, then the computing job's."""

    def stages(x: Any) -> str:
        return (
            f"queue {x.queue_ms:.1f} ms, batch wait {x.batch_wait_ms:.1f} ms, compute {x.compute_ms:.1f} ms, "
            f"processing {x.processing_ms:.1f} ms, batch {x.batch_size}"
        )

    e2e = "" if t.end_to_end_ms is None else f"end to end {t.end_to_end_ms:.1f} ms"
    if t.computed is None:
        return [", ".join(p for p in (stages(t), e2e) if p)]
    return [f"served from the cache: {e2e or 'no compute'}", f"computed earlier: {stages(t.computed)}"]
