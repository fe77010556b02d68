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
from fedlake.core.aggregator import Aggregator, cohort_deltas, require_updates
from fedlake.core.checks import check_int
from fedlake.core.update import ClientUpdate


def trimmed_count(n: int, trim_ratio: float) -> int:
    """How many values are dropped at each end: ``floor(trim_ratio * n)``.

    The product is nudged up by a relative 1e-12 first: a ratio meant as a / n (one
    attacker in 49 clients, 0.29 of 100) is stored a hair below it, and the bare floor
    would trim one value too few (``int(1 / 49 * 49) == 0``, ``int(0.29 * 100) == 28``).
    At most ``(n - 1) // 2``, so at least one value is always kept.
    """
    return min(math.floor(trim_ratio * n * (1 + 1e-12)), (n - 1) // 2)


def trimmed_mean(*, trim_ratio: float | None = None, trim: int | None = None) -> Aggregator:
    """Mean of every coordinate after dropping its largest and smallest values.

    Args:
        trim_ratio: the share dropped at each end (default 0.1), ``floor(trim_ratio * n)``
            values of the n that arrive.
        trim: instead, a fixed count dropped at each end (e.g. the number of Byzantine
            clients tolerated); the rule then needs ``n >= 2 trim + 1`` updates.
    """
    if trim is not None and trim_ratio is not None:
        raise ValueError(f"give trim_ratio or trim, not both (got {trim_ratio!r} and {trim!r})")
    fixed = None if trim is None else check_int("trim (values dropped at each end)", trim, low=0)
    if isinstance(trim_ratio, bool) or not isinstance(trim_ratio, numbers.Real | None):
        raise ValueError(f"trim_ratio must be a number in [0, 0.5), got {trim_ratio!r}")
    ratio = 0.1 if trim_ratio is None else float(trim_ratio)
    if not 0 <= ratio < 0.5:
        raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
    needed = 1 if fixed is None else 2 * fixed + 1

    def init(dim: int) -> None:
        return None

    def aggregate(updates: Sequence[ClientUpdate], state: None) -> tuple[np.ndarray, None]:
        rows = cohort_deltas(updates)
        n = len(rows)
        require_updates("trimmed_mean", n, needed, f"n >= 2 trim + 1 with trim = {fixed}")
        k = trimmed_count(n, ratio) if fixed is None else fixed

        def reduce(block: np.ndarray) -> np.ndarray:
            if k == 0:
                return block.mean(axis=1, dtype=np.float64)
            return np.sort(block, axis=1)[:, k : n - k].mean(axis=1, dtype=np.float64)

        return columnwise(rows, reduce), state

    return Aggregator(init, aggregate, linear=False, name="trimmed_mean", min_updates=needed)
