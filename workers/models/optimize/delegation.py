"""How much of a TFLite model LiteRT hands to XNNPACK, its fast CPU kernels.

Speed differences between variants on a CPU are mostly this: an op XNNPACK takes runs
in its optimized kernels (AVX2/AVX-512, VNNI for int8), an op it leaves runs in
TFLite's reference kernels, often ten times slower. int16x8 models, for one, are
left entirely to the reference kernels here. ``compare`` reports the count for the ops
that carry the work (convolutions, fully connected, matmuls).

LiteRT's Python API does not expose the execution plan, so the count is read from the
graph after delegation: a DELEGATE node's inputs are every tensor its partition takes
from outside (the model's inputs, weights, and other partitions' outputs), so an op
runs inside a partition when all its inputs come from those, or from ops inside it.
"""

from __future__ import annotations

from pathlib import Path

HEAVY_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})


def heavy_ops_delegated(path: Path, threads: int = 1) -> tuple[int, int] | None:
    """(heavy ops XNNPACK runs, heavy ops in all); ``None`` where LiteRT cannot say."""
    from workers.models.runtimes.litert import interpreter_class

    try:
        interp = interpreter_class()(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
        ops = interp._get_ops_details()  # a private call: any failure only loses this figure
    except Exception:
        return None
    entering: set[int] = set()
    for op in ops:
        if op["op_name"] == "DELEGATE":
            entering.update(int(t) for t in op["inputs"])
    inside: set[int] = set()
    produced: set[int] = set()
    changed = True
    while changed:  # ops in graph order mostly settle in one pass; a second confirms
        changed = False
        for i, op in enumerate(ops):
            if i in inside or op["op_name"] == "DELEGATE" or not entering:
                continue
            if all(int(t) < 0 or int(t) in entering or int(t) in produced for t in op["inputs"]):
                inside.add(i)
                produced.update(int(t) for t in op["outputs"])
                changed = True
    heavy = [i for i, op in enumerate(ops) if op["op_name"] in HEAVY_OPS]
    return sum(1 for i in heavy if i in inside), len(heavy)
