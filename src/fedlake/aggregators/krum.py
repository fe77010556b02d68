"""Krum and Multi-Krum.

Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS 2017.

Each update's *score* is the sum of its squared distances to its ``n - f - 2`` nearest
other updates (itself excluded), as in the paper and in Flower. Krum returns the update
with the lowest score; Multi-Krum averages the ``m`` lowest-scoring updates (uniformly:
client-reported weights are not trusted). Both need ``n >= 2f + 3`` (the paper's
``n > 2f + 2``). Ties go to the client first in cohort order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlake.aggregators._matrix import pairwise_sq_distances, weighted_rows
from fedlake.core.aggregator import Aggregator, cohort_deltas, require_updates
from fedlake.core.checks import check_int
from fedlake.core.update import ClientUpdate


def krum_neighbours(n: int, f: int) -> int:
    """How many nearest neighbours a Krum score sums over: ``n - f - 2`` (at least 1)."""
    return max(1, n - f - 2)


def krum_scores(sq_dist: np.ndarray, f: int) -> np.ndarray:
    """Krum score of every row of an (n, n) squared-distance matrix."""
    n = sq_dist.shape[0]
    k = krum_neighbours(n, f)
    others = sq_dist.copy()
    np.fill_diagonal(others, np.inf)  # a client is not its own neighbour
    return np.partition(others, k - 1, axis=1)[:, :k].sum(axis=1)


def krum_select(sq_dist: np.ndarray, f: int, m: int) -> np.ndarray:
    """Indices of the ``m`` lowest Krum scores, best first (ties: lower index first)."""
    return np.argsort(krum_scores(sq_dist, f), kind="stable")[:m]


def krum(*, f: int) -> Aggregator:
    """Krum: the single update closest to its ``n - f - 2`` nearest neighbours."""
    return multi_krum(f=f, m=1)


def multi_krum(*, f: int, m: int | None = None) -> Aggregator:
    """Multi-Krum: the uniform mean of the ``m`` best-scored updates (default ``m = n - f``)."""
    f = check_int("f (Byzantine clients tolerated)", f, low=0)
    if m is not None:
        m = check_int("m (updates averaged)", m, low=1)
    needed = max(2 * f + 3, m or 0)
    name = "krum" if m == 1 else "multi_krum"

    def init(dim: int) -> None:
        return None

    def aggregate(updates: Sequence[ClientUpdate], state: None) -> tuple[np.ndarray, None]:
        n = len(updates)
        rule = f"n >= 2f + 3 with f = {f}" + (f" and n >= m = {m}" if m and m > 1 else "")
        require_updates(name, n, needed, rule)
        rows = cohort_deltas(updates)
        keep = m if m is not None else n - f
        chosen = krum_select(pairwise_sq_distances(rows), f, keep)
        if keep == 1:
            return rows[chosen[0]].copy(), state
        weights = np.zeros(n)
        weights[chosen] = 1.0 / keep
        return weighted_rows(rows, weights, dtype=np.float32), state

    return Aggregator(init, aggregate, linear=False, name=name, min_updates=needed)
