"""LiteRT with varying batch sizes: re-allocating tensors ("resize") vs padding to a bucket ("pad").

    .venv/bin/python benchmarks/litert_batching.py [--models-dir models] [--seed 0] [--quick]

In process, no Redis, no Celery. For digits fp32/int8 (num_threads=1) and
mobilenet_v2 fp32/int8 (num_threads=1 and 2) it prints markdown tables of:

(a) raw throughput at fixed batch sizes (one interpreter already allocated at that
    size): inferences/s, and the best batch size;
(b) a realistic sequence of varying batch sizes (digits: 500 batches drawn uniformly
    from 1..64; mobilenet: 60 from 1..8; the same sequence for both policies), each
    policy on a fresh runtime after ``warmup(max_batch_size)``: total time,
    inferences/s, mean and p99 per-batch latency. The two policies alternate, twice,
    and the faster of each policy's two runs is shown (the machine is shared);
(c) RSS each policy costs (a fresh process per row): one model warmed up to its
    ``max_batch_size``, and a worker-like process with all four variants warmed up;
(d) what one re-allocation costs: ``resize_tensor_input`` + ``allocate_tensors`` to a
    new batch size, and how much slower the invoke right after it is than the next.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.models.registry import Registry  # noqa: E402
from workers.models.runtimes.batch_sizes import bucket_for  # noqa: E402
from workers.models.runtimes.litert import LiteRTRuntime, interpreter_class  # noqa: E402

DIGITS_SIZES = [1, 2, 4, 8, 16, 32, 64]
MOBILENET_SIZES = [1, 2, 4, 8]
POLICIES = ("resize", "pad")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_inputs(rt: LiteRTRuntime, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for spec in rt.info.inputs:
        shape = (n, *(1 if d is None else d for d in spec.shape))
        out[spec.name] = rng.random(shape, dtype=np.float32)
    return out


def head(x: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: v[:n] for k, v in x.items()}


def raw_throughput(rt: LiteRTRuntime, x: dict[str, np.ndarray], n: int, budget_s: float) -> float:
    """Inferences/s at a fixed batch size ``n`` (first call, which allocates, untimed)."""
    batch = head(x, n)
    rt.predict(batch)
    calls = 0
    t0 = time.perf_counter()
    while True:
        rt.predict(batch)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s and calls >= 3:
            return calls * n / elapsed


def run_sequence(rt: LiteRTRuntime, x: dict[str, np.ndarray], sizes: list[int]) -> dict[str, float]:
    lat = np.empty(len(sizes))
    t0 = time.perf_counter()
    for i, n in enumerate(sizes):
        s = time.perf_counter()
        rt.predict(head(x, n))
        lat[i] = time.perf_counter() - s
    total = time.perf_counter() - t0
    return {
        "total_s": total,
        "ips": sum(sizes) / total,
        "mean_ms": float(lat.mean() * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


def realloc_cost(path: Path, max_b: int, seed: int, quick: bool) -> list[str]:
    """Time a resize + allocate to a random new batch size, and the invoke right after it."""
    interp = interpreter_class()(model_path=str(path), num_threads=1)
    detail = interp.get_input_details()[0]
    rest = [int(d) for d in detail["shape"][1:]]
    interp.allocate_tensors()
    rng = np.random.default_rng(seed)
    alloc, extra = [], []
    prev = 1
    for _ in range(10 if quick else 60):
        n = prev
        while n == prev:
            n = int(rng.integers(1, max_b + 1))
        prev = n
        x = np.zeros([n, *rest], detail["dtype"])
        t0 = time.perf_counter()
        interp.resize_tensor_input(detail["index"], [n, *rest], strict=False)
        interp.allocate_tensors()
        alloc.append(time.perf_counter() - t0)
        interp.set_tensor(detail["index"], x)
        t0 = time.perf_counter()
        interp.invoke()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        interp.invoke()
        extra.append(first - (time.perf_counter() - t0))
    a = np.array(alloc) * 1e3
    name = f"{path.parent.parent.name} {path.parent.name}"
    return [
        name,
        f"1..{max_b}",
        f"{a.mean():.3f}",
        f"{np.percentile(a, 99):.3f}",
        f"{np.mean(extra) * 1e3:+.3f}",
    ]


RSS_SNIPPET = """
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from workers.models.registry import Registry
from workers.models.runtimes.litert import LiteRTRuntime, interpreter_class
from benchmarks.litert_batching import rss_mib
interpreter_class()  # import LiteRT before the baseline
reg = Registry(Path({models!r}))
entries = [reg.get(*k.split(":")) for k in {keys!r}]
base = rss_mib()
rts = []
t0 = time.perf_counter()
for e in entries:
    rt = LiteRTRuntime(e, threads=1, batch_policy={policy!r})
    rt.warmup(e.info.max_batch_size)
    rts.append(rt)
warm_s = time.perf_counter() - t0
print(json.dumps({{"base": base, "after": rss_mib(), "warm_s": warm_s,
                   "buckets": [rt.buckets for rt in rts]}}))
"""


def rss_cost(models_dir: Path, keys: list[str], policy: str) -> dict[str, float]:
    code = RSS_SNIPPET.format(root=str(ROOT), models=str(models_dir), keys=keys, policy=policy)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few seconds per section, for a smoke test")
    args = ap.parse_args()
    reg = Registry(args.models_dir)
    started = time.perf_counter()

    # (model, variant, threads, fixed sizes, sequence length, max batch, raw budget s per size)
    cases = [
        ("digits", "fp32", 1, DIGITS_SIZES, 500, 64, 0.4),
        ("digits", "int8", 1, DIGITS_SIZES, 500, 64, 0.4),
        ("mobilenet_v2", "fp32", 1, MOBILENET_SIZES, 60, 8, 1.0),
        ("mobilenet_v2", "fp32", 2, MOBILENET_SIZES, 60, 8, 1.0),
        ("mobilenet_v2", "int8", 1, MOBILENET_SIZES, 60, 8, 1.0),
        ("mobilenet_v2", "int8", 2, MOBILENET_SIZES, 60, 8, 1.0),
    ]
    if args.quick:
        cases = [(m, v, t, s, n // 10, b, 0.05) for m, v, t, s, n, b, _ in cases]

    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores. Seed {args.seed}.\n")

    # (a) fixed batch sizes
    print("### (a) Raw throughput at fixed batch sizes (inferences/s)\n")
    cols = DIGITS_SIZES
    print("| model | threads | " + " | ".join(f"b={b}" for b in cols) + " | best |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for model, variant, threads, sizes, _, _, budget in cases:
        rt = LiteRTRuntime(reg.get(model, variant), threads=threads, batch_policy="resize")
        x = make_inputs(rt, max(sizes), args.seed)
        ips = {n: raw_throughput(rt, x, n, budget) for n in sizes}
        best = max(ips, key=lambda n: ips[n])
        cells = [f"{ips[b]:,.0f}" if b in ips else "" for b in cols]
        print(
            f"| {model} {variant} | {threads} | " + " | ".join(cells) + f" | b={best}: {ips[best]:,.0f}/s |"
        )
        del rt

    # (b) varying batch sizes
    print("\n### (b) Varying batch sizes: resize vs pad (after warmup)\n")
    print(
        "| model | threads | batches (sizes) | policy | rows computed / real | total s | inferences/s | "
        "mean ms/batch | p99 ms/batch | pad/resize throughput |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, variant, threads, _, n_batches, max_b, _ in cases:
        entry = reg.get(model, variant)
        rng = np.random.default_rng(args.seed)
        sizes = [int(s) for s in rng.integers(1, max_b + 1, size=n_batches)]
        best: dict[str, dict[str, float]] = {}
        for _rep in range(2):
            for policy in POLICIES:
                rt = LiteRTRuntime(entry, threads=threads, batch_policy=policy)
                rt.warmup(max_b)
                x = make_inputs(rt, max_b, args.seed)
                r = run_sequence(rt, x, sizes)
                if policy not in best or r["total_s"] < best[policy]["total_s"]:
                    best[policy] = r
                del rt
        ratio = best["pad"]["ips"] / best["resize"]["ips"]
        work = {"resize": 1.0, "pad": sum(bucket_for(n, max_b) for n in sizes) / sum(sizes)}
        for policy in POLICIES:
            r = best[policy]
            print(
                f"| {model} {variant} | {threads} | {n_batches} (1..{max_b}) | {policy} | {work[policy]:.2f} | "
                f"{r['total_s']:.2f} | {r['ips']:,.0f} | {r['mean_ms']:.2f} | {r['p99_ms']:.2f} | "
                + (f"{ratio:.2f}x |" if policy == "pad" else "|")
            )

    # (c) memory
    print("\n### (c) RSS after warmup(max_batch_size), fresh process per row, num_threads=1 (MiB)\n")
    print(
        "| models | policy | buckets | RSS before loading | RSS after warmup | added by the models | warmup s |"
    )
    print("|---|---|---|---|---|---|---|")
    groups = [
        ["digits:fp32"],
        ["digits:int8"],
        ["mobilenet_v2:fp32"],
        ["mobilenet_v2:int8"],
        ["digits:fp32", "digits:int8", "mobilenet_v2:fp32", "mobilenet_v2:int8"],
    ]
    for keys in groups:
        for policy in POLICIES:
            r = rss_cost(args.models_dir, keys, policy)
            buckets = "; ".join(",".join(map(str, b)) for b in r["buckets"]) if policy == "pad" else "-"
            label = " + ".join(keys) if len(keys) == 1 else "all four"
            print(
                f"| {label} | {policy} | {buckets} | {r['base']:.0f} | {r['after']:.0f} | "
                f"{r['after'] - r['base']:.0f} | {r['warm_s']:.2f} |"
            )

    # (d) what one re-allocation costs
    print("\n### (d) One resize_tensor_input + allocate_tensors to a new batch size (ms, num_threads=1)\n")
    print("| model | sizes | mean | p99 | first invoke after it, extra over a steady invoke |")
    print("|---|---|---|---|---|")
    for model, variant, threads, _, _, max_b, _ in cases:
        if threads != 1:
            continue
        print(
            "| " + " | ".join(realloc_cost(reg.get(model, variant).path, max_b, args.seed, args.quick)) + " |"
        )

    print(f"\n(total run time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
