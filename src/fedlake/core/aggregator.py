"""Aggregators: turn a cohort's updates into one vector.

Linear aggregators (the weighted mean) also offer a streaming ``fold`` whose
memory is O(d) whatever the number of clients; non-linear ones (Krum, median)
need the whole cohort and set ``linear=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fedlake.core.update import ClientUpdate


@dataclass
class FoldAccumulator:
    """Running weighted sum (float64) and total weight; mutated in place to stay O(d)."""

    total: np.ndarray
    weight: float = 0.0
    count: int = 0


class Fold(NamedTuple):
    """Streaming interface of a linear aggregator."""

    start: Callable[[int], FoldAccumulator]
    add: Callable[[FoldAccumulator, ClientUpdate], FoldAccumulator]
    result: Callable[[FoldAccumulator, Any], tuple[np.ndarray, Any]]


class Aggregator(NamedTuple):
    """``init(dim) -> state`` and ``aggregate(updates, state) -> (vec, state)``."""

    init: Callable[[int], Any]
    aggregate: Callable[[Sequence[ClientUpdate], Any], tuple[np.ndarray, Any]]
    linear: bool
    name: str
    fold: Fold | None = None


def stack_deltas(updates: Sequence[ClientUpdate], key: str = "delta") -> np.ndarray:
    """Stack the cohort's vectors into one (n, d) float32 matrix."""
    if not updates:
        raise ValueError("cannot aggregate an empty cohort")
    return np.stack([np.asarray(u.vectors[key], dtype=np.float32) for u in updates])
