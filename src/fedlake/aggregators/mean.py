"""Weighted mean (FedAvg's aggregator), with an O(d)-memory streaming fold.

McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlake.aggregators._matrix import scaled_add, weighted_rows
from fedlake.core.aggregator import Aggregator, Fold, FoldAccumulator, cohort_deltas, merge_sums
from fedlake.core.recycle import AGGREGATION
from fedlake.core.update import ClientUpdate


def weighted_mean(*, uniform: bool = False) -> Aggregator:
    """Mean of client deltas weighted by ``update.weight`` (or uniformly when ``uniform``)."""

    def weight_of(u: ClientUpdate) -> float:
        return 1.0 if uniform else float(u.weight)

    def init(dim: int) -> None:
        return None

    def aggregate(updates: Sequence[ClientUpdate], state: None) -> tuple[np.ndarray, None]:
        rows = cohort_deltas(updates)
        w = np.array([weight_of(u) for u in updates], dtype=np.float64)
        total = float(w.sum())
        if total <= 0:
            raise ValueError(f"total weight must be > 0, got {total}")
        # one pass: float64 sums, divided and rounded to float32 as they are written
        return weighted_rows(rows, w, divide_by=total, dtype=np.float32), state

    def start(dim: int) -> FoldAccumulator:
        total = AGGREGATION.empty(dim, np.float64)  # last round's, once let go: no faults
        total.fill(0.0)
        return FoldAccumulator(total=total)

    def add(acc: FoldAccumulator, u: ClientUpdate) -> FoldAccumulator:
        w = weight_of(u)
        # In place, no temporary of size d: memory stays O(d) however many clients stream.
        scaled_add(acc.total, w, u.delta)
        acc.weight += w
        acc.count += 1
        return acc

    def result(acc: FoldAccumulator, state: None) -> tuple[np.ndarray, None]:
        if acc.count == 0 or acc.weight <= 0:
            raise ValueError("cannot aggregate an empty cohort")
        out = AGGREGATION.empty(acc.total.size, np.float32).reshape(acc.total.shape)
        return np.divide(acc.total, acc.weight, out=out, casting="same_kind"), state

    name = "mean" if uniform else "weighted_mean"
    fold = Fold(start, add, result, merge_sums)
    return Aggregator(init, aggregate, linear=True, name=name, fold=fold)


def fold_all(
    aggregator: Aggregator, updates: Sequence[ClientUpdate], dim: int, state: object
) -> tuple[np.ndarray, object]:
    """Aggregate by streaming every update through ``aggregator.fold`` (linear rules only)."""
    if aggregator.fold is None:
        raise ValueError(f"aggregator {aggregator.name!r} is not linear: it has no streaming fold")
    acc = aggregator.fold.start(dim)
    for u in updates:
        acc = aggregator.fold.add(acc, u)
    return aggregator.fold.result(acc, state)
