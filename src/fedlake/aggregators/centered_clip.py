"""Centered clipping.

Karimireddy, He and Jaggi, "Learning from History for Byzantine Robust Optimization",
ICML 2021.

Starting from the previous round's aggregate ``v`` (the history), each of ``iterations``
steps moves ``v`` by the mean of the updates' offsets from it, each offset clipped to
norm ``tau``: ``v <- v + (1/n) sum_i (x_i - v) min(1, tau / |x_i - v|)``. One Byzantine
update moves the result by at most ``tau / n`` per step. The aggregator's state is
``v``, so it is kept in checkpoints like the server optimiser's.

``tau = None`` (the default) sets the radius in every step to the median distance of
the updates from ``v``: scale-free, and still bounded by the honest majority's
distances. The paper tunes a fixed ``tau``; give one to reproduce it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlake.aggregators._matrix import Cohort, row_distances, weighted_rows
from fedlake.core.aggregator import Aggregator, cohort_deltas
from fedlake.core.checks import check_int, check_positive_or_none
from fedlake.core.params import frozen
from fedlake.core.update import ClientUpdate


def clip_around(
    matrix: Cohort, centre: np.ndarray, *, tau: float | None, iterations: int
) -> np.ndarray:
    """Centered clipping of the cohort's rows starting from ``centre`` (float32)."""
    n = len(matrix)
    v = np.asarray(centre, dtype=np.float32)
    for _ in range(iterations):
        dist = row_distances(matrix, v)
        radius = float(np.median(dist)) if tau is None else tau
        scale = np.ones(n)
        far = dist > radius
        scale[far] = radius / dist[far]
        # v + mean_i scale_i (x_i - v), without materialising x_i - v
        step = (weighted_rows(matrix, scale) - scale.sum() * v.astype(np.float64)) / n
        v = (v + step).astype(np.float32)
    return v


def centered_clip(*, tau: float | None = None, iterations: int = 1) -> Aggregator:
    """Centered clipping around the previous aggregate with radius ``tau``."""
    tau_ = check_positive_or_none("tau (clipping radius)", tau)
    iterations = check_int("iterations", iterations, low=1)

    def init(dim: int) -> np.ndarray:
        return frozen(np.zeros(dim, dtype=np.float32))

    def aggregate(
        updates: Sequence[ClientUpdate], state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = cohort_deltas(updates)
        centre = state if state is not None else np.zeros(rows[0].shape[0], np.float32)
        v = clip_around(rows, centre, tau=tau_, iterations=iterations)
        return v, frozen(v)

    return Aggregator(init, aggregate, linear=False, name="centered_clip")
