"""The ``inferq bench`` and ``inferq tune`` sub-parsers.

Kept apart from ``ops/bench/cli.py`` (numpy, the client, the load generator) because
``ops/cli.py`` builds every parser on each run, and this module must stay cheap to import.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``bench`` and ``tune`` to ``inferq``'s subcommands."""
    bn = sub.add_parser("bench", help="load a model through the system; latency percentiles and throughput")
    bn.add_argument("--model", required=True, metavar="MODEL[:VARIANT]")
    load = bn.add_mutually_exclusive_group(required=True)
    load.add_argument("--rate", help="open loop: Poisson arrivals, jobs/s; a comma list sweeps")
    load.add_argument(
        "--concurrency", dest="bench_concurrency", help="closed loop: jobs in flight; a comma list sweeps"
    )
    bn.add_argument("--duration", type=float, default=10.0, help="seconds of load per point")
    bn.add_argument(
        "--sweep",
        action="store_true",
        help="from the given rate/concurrency, double the load until the system saturates; report the curve and knee",
    )
    bn.add_argument(
        "--inputs",
        type=Path,
        help=".npy of inputs (leading axis); default: the model's held-out data or random",
    )
    bn.add_argument(
        "--repeat-fraction",
        type=float,
        help="share of jobs resending an earlier input (cache hits), 0 to 1 "
        "(default 0, or 0.5 when --compare includes cache)",
    )
    bn.add_argument("--senders", type=int, default=4, help="sender threads for open loop")
    bn.add_argument(
        "--no-worker-check",
        action="store_true",
        help="load a variant no live worker serves (its jobs wait in the queue); refused by default",
    )
    bn.add_argument("--json", action="store_true")
    bn.add_argument(
        "--plot", type=Path, help="write a PNG: latency CDF, breakdown per percentile, sweep curve"
    )
    bn.add_argument(
        "--compare",
        help="variant,batching,cache: run the same load over each combination, side by side "
        "(starts its own workers; the model's queue must have no other worker)",
    )
    bn.add_argument(
        "--variants",
        help="only with --compare variant: the variants to compare (default: all in the models folder)",
    )
    bn.add_argument(
        "--target",
        metavar="URL",
        help="drive the HTTP gateway at URL (http://host:port) instead of Redis directly; needs --concurrency",
    )
    bn.add_argument(
        "--http-path",
        choices=("infer", "jobs"),
        default="infer",
        help="with --target: POST .../infer and hold it open (default), or POST .../jobs then GET the job",
    )
    bn.add_argument("--api-key", help="with --target: the Bearer key (default: the first of INFERQ_API_KEYS)")

    tu = sub.add_parser(
        "tune", help="recommend batching/threads/variant for a p99 budget (starts its own workers)"
    )
    tu.add_argument("--model", required=True, help="a model name (choose its variants with --variants)")
    tu.add_argument("--p99-ms", type=float, required=True, help="end-to-end p99 budget")
    tu.add_argument("--variants", help="comma list (default: every variant in the models folder)")
    tu.add_argument("--batch-sizes", default="1,8,32", help="max_batch_size values to try")
    tu.add_argument("--waits", default="2", help="max_wait_ms values to try (with batching)")
    tu.add_argument("--tune-threads", default="1", help="worker thread counts to try")
    tu.add_argument(
        "--concurrency", dest="tune_concurrency", default="1,8,32", help="closed-loop loads per configuration"
    )
    tu.add_argument("--duration", type=float, default=3.0, help="seconds per load point")
    tu.add_argument(
        "--inputs", type=Path, help=".npy of inputs (default: the model's held-out data or random)"
    )
    tu.add_argument(
        "--apply", action="store_true", help="write the recommendation into the variant's meta.json"
    )
    tu.add_argument("--json", action="store_true")
