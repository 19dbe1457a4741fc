"""Batch sizes for the LiteRT runtime: the pad policy's buckets and the compute batch.

Pure functions and the constants they are tuned by, kept apart from ``litert.py`` (which
holds the interpreters and the tensor plumbing) so the sizing rules read, and are tested,
without a model or LiteRT installed.

Batch sizes change from call to call, and a TFLite interpreter re-plans its tensors
(``resize_tensor_input`` + ``allocate_tensors``) whenever an input shape changes. Two
policies (``batch_policy``):

- ``"resize"`` (default): one interpreter, resized and re-allocated whenever the
  shape changes. With LiteRT 2.x and XNNPACK that costs well under a millisecond.
- ``"pad"``: one interpreter per bucket size (powers of two, topped by the model's
  ``max_batch_size``), each created on first use and allocated once; a batch is
  padded with zeros (int8: the zero point) up to its bucket and the outputs are
  sliced back. A batch larger than the largest bucket runs in chunks of that size
  (``warmup`` with a larger size raises the largest bucket).
  Costs one tensor arena and one copy of XNNPACK's packed weights per bucket, and
  computes the padding rows.

``docs/benchmarks.md`` ("LiteRT: re-allocating vs padding") has the figures behind
the default: padding was 17-33% slower and took 2.5x the memory.

The batch a worker *forms* and the batch the model *runs* need not be the same size. A
big batch amortises the worker's per-batch cost (fetch, store, ack: about a
millisecond), but a heavy model can run slower per input at a big batch than at a
small one (MobileNetV2 at one thread here: 5-12% slower per input at 8 than at 1 or
2 in some calibrations, within 5% in others).
``LiteRTRuntime.calibrate_compute_batch`` times the model at each size up to the
worker's batch and keeps the largest one within ``COMPUTE_BATCH_TOLERANCE`` of the
fastest (``choose_compute_batch``); ``predict`` then runs a bigger batch as consecutive
calls of that size (none, where the worker's whole batch is within it).
"""

from __future__ import annotations

#: The values of ``LiteRTRuntime``'s ``batch_policy`` (see above).
BATCH_POLICIES = ("resize", "pad")

#: ``calibrate_compute_batch`` keeps the largest batch size whose time per input is
#: within this of the fastest size's. Largest, because each call gives up Python's GIL
#: and must take it back: while another thread of the worker runs Python, that can
#: wait up to the interpreter's switch interval (5 ms), so a call is only worth
#: splitting where a smaller size is clearly faster per input.
COMPUTE_BATCH_TOLERANCE = 0.05
#: Each size is called at least this many times and for this long; the fastest call counts
#: (the least disturbed by whatever else this shared machine runs).
CALIBRATION_CALLS = 3
CALIBRATION_MIN_S = 0.03


def choose_compute_batch(per_input_s: dict[int, float], tolerance: float = COMPUTE_BATCH_TOLERANCE) -> int:
    """The largest batch size whose time per input is within ``tolerance`` of the best."""
    best = min(per_input_s.values())
    return max(b for b, t in per_input_s.items() if t <= best * (1 + tolerance))


def bucket_sizes(max_bucket: int) -> list[int]:
    """The pad policy's buckets: powers of two below ``max_bucket``, then ``max_bucket``."""
    sizes = []
    b = 1
    while b < max_bucket:
        sizes.append(b)
        b *= 2
    return [*sizes, max(1, max_bucket)]


def bucket_for(n: int, max_bucket: int) -> int:
    """The smallest bucket that holds ``n`` rows (``n`` at most ``max_bucket``)."""
    return min(1 << max(0, n - 1).bit_length(), max(1, max_bucket))
