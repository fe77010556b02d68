"""Coordinate-wise trimmed mean.

Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018.

For every coordinate, the ``k = floor(trim_ratio * n)`` largest and ``k`` smallest values
are dropped and the rest averaged (as ``scipy.stats.trim_mean`` and Flower do); client
weights are not used. Each block of coordinates is sorted as contiguous rows, which
numpy's vectorised sort does faster than a partition around the two cut points
(bench/aggregation.py measures both).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from fedlake.aggregators._matrix import columnwise
from fedlake.core.aggregator import Aggregator, cohort_deltas
from fedlake.core.update import ClientUpdate


def trimmed_count(n: int, trim_ratio: float) -> int:
    """How many values are dropped at each end: ``floor(trim_ratio * n)``.

    The product is nudged up by a relative 1e-12 first: a ratio meant as a / n (one
    attacker in 49 clients, 0.29 of 100) is stored a hair below it, and the bare floor
    would trim one value too few (``int(1 / 49 * 49) == 0``, ``int(0.29 * 100) == 28``).
    At most ``(n - 1) // 2``, so at least one value is always kept.
    """
    return min(math.floor(trim_ratio * n * (1 + 1e-12)), (n - 1) // 2)


def trimmed_mean(*, trim_ratio: float = 0.1) -> Aggregator:
    """Mean of every coordinate after dropping its ``trim_ratio`` largest and smallest values."""
    if isinstance(trim_ratio, bool) or not isinstance(trim_ratio, numbers.Real):
        raise ValueError(f"trim_ratio must be a number in [0, 0.5), got {trim_ratio!r}")
    if not 0 <= trim_ratio < 0.5:
        raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
    ratio = float(trim_ratio)

    def init(dim: int) -> None:
        return None

    def aggregate(updates: Sequence[ClientUpdate], state: None) -> tuple[np.ndarray, None]:
        rows = cohort_deltas(updates)
        n = len(rows)
        k = trimmed_count(n, ratio)

        def reduce(block: np.ndarray) -> np.ndarray:
            if k == 0:
                return block.mean(axis=1, dtype=np.float64)
            return np.sort(block, axis=1)[:, k : n - k].mean(axis=1, dtype=np.float64)

        return columnwise(rows, reduce), state

    return Aggregator(init, aggregate, linear=False, name="trimmed_mean")
