"""Magnitude masks and the sparsity schedule: the arithmetic of pruning, no TensorFlow.

A kernel is pruned by zeroing its smallest weights by magnitude (per layer, so every
layer keeps the same share of its weights and none is emptied). During a fine-tune the
share rises from 0 to the target along Zhu & Gupta's cubic schedule ("To prune, or not
to prune", 2017): fast at first, when many small weights go cheaply, then slowly, so
the remaining weights have steps to take over from those removed.
"""

from __future__ import annotations

import numpy as np

from tasks.errors import BadInput


def check_sparsity(sparsity: float) -> float:
    """The target share of zeros: strictly between 0 (nothing pruned) and 1 (nothing left)."""
    if not 0.0 < sparsity < 1.0:  # also refuses NaN
        raise BadInput(
            f"--sparsity must lie strictly between 0 and 1 (0.5: half the weights), got {sparsity}"
        )
    return float(sparsity)


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A boolean keep-mask zeroing exactly ``round(sparsity * size)`` of the smallest weights.

    Exact, not a threshold: with a threshold, ties (a kernel already half zero from an
    earlier step) would prune too many or too few. A stable sort breaks ties by position,
    so the same weights give the same mask.
    """
    flat = np.abs(weights).ravel()
    k = round(sparsity * flat.size)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    return keep.reshape(weights.shape)


def scheduled_sparsity(step: int, end_step: int, target: float) -> float:
    """The share of zeros at ``step``: 0 at step 0, ``target`` from ``end_step`` on, cubic between."""
    if end_step <= 0 or step >= end_step:
        return target
    done = max(0, step) / end_step
    return target * (1.0 - (1.0 - done) ** 3)


def share_of_zeros(arrays: list[np.ndarray]) -> float:
    """Zeros over all elements of ``arrays`` (0 for none)."""
    total = sum(a.size for a in arrays)
    return sum(int(np.count_nonzero(a == 0)) for a in arrays) / total if total else 0.0
