"""Geometric median (Robust Federated Aggregation, RFA).

Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated Learning", IEEE
Transactions on Signal Processing, 2022.

The point minimising the sum of Euclidean distances to the updates, found with the
smoothed Weiszfeld algorithm: ``z <- sum_i w_i x_i / sum_i w_i`` with
``w_i = 1 / max(nu, |z - x_i|)``, for at most ``max_iter`` iterations. Client weights
are not used. Its breakdown point is 1/2: fewer than half the updates cannot move it
arbitrarily far.

Two choices keep one huge update from defeating the iterations (RFA starts from the
mean and stops when the objective changes by less than ``ftol`` of itself):

- The start is one centred-clipping step around the coordinate-wise median (radius:
  the median distance). A huge update drags the mean as far as it likes and every
  iteration only divides that distance by about n; the clipped step also keeps the
  start off the data points, where the smoothing would stall the iterations.
- An iteration's progress is the decrease of Weiszfeld's quadratic model,
  ``sum_i w_i |z_new - z|^2 / 2`` (no cancellation), and the iterations stop when it is
  at most ``ftol`` times ``n * median_i |z - x_i|``, the objective as the majority of
  the updates sees it. The objective itself is dominated by the huge update's distance,
  and its float64 changes vanish in that distance's rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlake.aggregators._matrix import Cohort, columnwise, row_distances, weighted_rows
from fedlake.aggregators.centered_clip import clip_around
from fedlake.aggregators.median import median_of_rows
from fedlake.core.aggregator import Aggregator, cohort_deltas
from fedlake.core.checks import check_int, check_positive
from fedlake.core.update import ClientUpdate


def weiszfeld(matrix: Cohort, *, nu: float, max_iter: int, ftol: float) -> tuple[np.ndarray, int]:
    """Smoothed Weiszfeld on the cohort's rows: ``(geometric median, iterations run)``."""
    n = len(matrix)
    z = clip_around(matrix, columnwise(matrix, median_of_rows), tau=None, iterations=1)
    dist = row_distances(matrix, z)
    for it in range(1, max_iter + 1):
        w = 1.0 / np.maximum(nu, dist)
        previous, z = z, weighted_rows(matrix, w, divide_by=float(w.sum()), dtype=np.float32)
        step = z.astype(np.float64) - previous
        dist = row_distances(matrix, z)
        if w.sum() / 2 * float(step @ step) <= ftol * n * float(np.median(dist)):
            return z, it
    return z, max_iter


def geometric_median(*, max_iter: int = 100, nu: float = 1e-6, ftol: float = 1e-6) -> Aggregator:
    """The geometric median of the cohort's deltas (RFA, smoothed Weiszfeld)."""
    max_iter = check_int("max_iter", max_iter, low=1)
    nu_ = check_positive("nu (smoothing)", nu)
    ftol_ = check_positive("ftol (relative tolerance)", ftol)

    def init(dim: int) -> None:
        return None

    def aggregate(updates: Sequence[ClientUpdate], state: None) -> tuple[np.ndarray, None]:
        z, _ = weiszfeld(cohort_deltas(updates), nu=nu_, max_iter=max_iter, ftol=ftol_)
        return z, state

    return Aggregator(init, aggregate, linear=False, name="geometric_median")
