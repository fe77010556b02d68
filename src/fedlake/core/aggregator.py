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
    """Running weighted sum (float64) and total weight; mutated in place to stay O(d).

    ``state`` is the aggregator's state of the round being folded (set by the round
    loop), for rules whose per-update work depends on it (an adaptive clip norm).
    """

    total: np.ndarray
    weight: float = 0.0
    count: int = 0
    state: Any = None


class Fold(NamedTuple):
    """Streaming interface of a linear aggregator.

    ``start(dim)`` makes an empty accumulator, ``add(acc, update)`` folds one update in (in
    place), ``merge(a, b)`` folds accumulator ``b`` into ``a`` (partial folds from worker
    processes, Spark partitions, tree aggregation; None: the rule cannot combine partial
    folds), ``result(acc, state)`` gives the aggregate and the aggregator's next state.
    """

    start: Callable[[int], FoldAccumulator]
    add: Callable[[FoldAccumulator, ClientUpdate], FoldAccumulator]
    result: Callable[[FoldAccumulator, Any], tuple[np.ndarray, Any]]
    merge: Callable[[FoldAccumulator, FoldAccumulator], FoldAccumulator] | None = None


def merge_sums(acc: FoldAccumulator, other: FoldAccumulator) -> FoldAccumulator:
    """Fold ``other`` into ``acc`` (in place): totals, weights and counts add."""
    acc.total += other.total
    acc.weight += other.weight
    acc.count += other.count
    return acc


class Aggregator(NamedTuple):
    """``init(dim) -> state`` and ``aggregate(updates, state) -> (vec, state)``.

    ``min_updates`` is the smallest cohort the rule is defined for (Krum with ``f``
    Byzantine clients needs ``2f + 3``); the round loop treats fewer valid updates like
    too few clients, and a federation whose cohort is smaller is refused when built.
    """

    init: Callable[[int], Any]
    aggregate: Callable[[Sequence[ClientUpdate], Any], tuple[np.ndarray, Any]]
    linear: bool
    name: str
    fold: Fold | None = None
    min_updates: int = 1


def stack_deltas(updates: Sequence[ClientUpdate], key: str = "delta") -> np.ndarray:
    """Stack the cohort's vectors into one (n, d) float32 matrix."""
    if not updates:
        raise ValueError("cannot aggregate an empty cohort")
    return np.stack([np.asarray(u.vectors[key], dtype=np.float32) for u in updates])


def cohort_deltas(updates: Sequence[ClientUpdate], key: str = "delta") -> list[np.ndarray]:
    """The cohort's vectors as float32 1-D arrays, without copying those already float32."""
    if not updates:
        raise ValueError("cannot aggregate an empty cohort")
    return [np.asarray(u.vectors[key], dtype=np.float32) for u in updates]


def require_updates(name: str, n: int, needed: int, rule: str) -> None:
    """Raise a ValueError naming the rule when a cohort of ``n`` is too small for it."""
    if n == 0:
        raise ValueError("cannot aggregate an empty cohort")
    if n < needed:
        raise ValueError(f"{name} needs at least {needed} updates ({rule}), got {n}")
