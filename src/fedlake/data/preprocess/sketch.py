"""A mergeable quantile sketch: counts in logarithmic buckets of fixed relative width.

Every value falls in a bucket fixed in advance by its magnitude, so sketches built
on different clients merge by adding counts, in any order, and merging the sketches
of parts gives exactly the sketch of the whole. Quantiles (and moments, when sums
are not released) come back within ``relative_accuracy`` of the true values.

Reference: C. Masson, J. E. Rim and H. K. Lee, "DDSketch: a fast and fully-mergeable
quantile sketch with relative-error guarantees", VLDB 2019.

Written here rather than taken from the ``ddsketch`` package (3.0.1): that one keeps
counts in an offset-indexed internal list, adds values one Python call at a time and
serialises only to protobuf. We need each bucket's count by index, to add DP noise to it
(counts may go negative), a JSON form and one vectorised pass per column: these ~100 lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ZERO_BAND", "Sketch", "gamma_of", "merge_sketches", "sketch_of"]

ZERO_BAND = 1e-9  # values closer to zero than this count in the zero bucket


def gamma_of(relative_accuracy: float) -> float:
    """The bucket ratio of a sketch with ``relative_accuracy`` (in (0, 1))."""
    if not 0.0 < relative_accuracy < 1.0:
        raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
    return (1.0 + relative_accuracy) / (1.0 - relative_accuracy)


@dataclass(frozen=True)
class Sketch:
    """Bucket counts: ``positive``/``negative`` map a bucket index to a count (floats: DP)."""

    relative_accuracy: float
    positive: Mapping[int, float]
    negative: Mapping[int, float]
    zero: float = 0.0

    @property
    def count(self) -> float:
        """Total count over all buckets."""
        return float(sum(self.positive.values()) + sum(self.negative.values()) + self.zero)

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """Bucket representatives in ascending order and their counts."""
        g = gamma_of(self.relative_accuracy)
        neg = sorted(self.negative.items(), key=lambda kv: -kv[0])
        pos = sorted(self.positive.items())
        reps = [-2.0 * g**i / (g + 1.0) for i, _ in neg] + [0.0]
        reps += [2.0 * g**i / (g + 1.0) for i, _ in pos]
        counts = [c for _, c in neg] + [self.zero] + [c for _, c in pos]
        return np.asarray(reps, dtype=np.float64), np.asarray(counts, dtype=np.float64)

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Approximate quantiles (negative counts from DP noise count as zero)."""
        reps, counts = self.values()
        held = counts > 0  # an empty bucket (the zero one, or noised below 0) holds no value
        reps, cum = reps[held], np.cumsum(counts[held])
        total = cum[-1] if len(cum) else 0.0
        if total <= 0:
            raise ValueError("a sketch with no values has no quantiles")
        out = []
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q}")
            out.append(float(reps[min(int(np.searchsorted(cum, q * total)), len(reps) - 1)]))
        return out

    def moments(self) -> tuple[float, float]:
        """Mean and variance estimated from the buckets (for summaries without sums)."""
        reps, counts = self.values()
        total = float(counts.sum())
        if total <= 0:
            raise ValueError("a sketch with no values has no moments")
        mean = float((reps * counts).sum() / total)
        var = float((counts * (reps - mean) ** 2).sum() / total)
        return mean, max(var, 0.0)


def sketch_of(values: np.ndarray, *, relative_accuracy: float) -> Sketch:
    """The sketch of the finite values of a float array (NaN values are skipped)."""
    log_g = math.log(gamma_of(relative_accuracy))
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    small = np.abs(x) < ZERO_BAND

    def buckets(mags: np.ndarray) -> dict[int, float]:
        idx = np.ceil(np.log(mags) / log_g).astype(np.int64)
        keys, counts = np.unique(idx, return_counts=True)
        return {int(k): float(c) for k, c in zip(keys, counts, strict=True)}

    return Sketch(
        relative_accuracy=float(relative_accuracy),
        positive=buckets(x[(x > 0) & ~small]),
        negative=buckets(-x[(x < 0) & ~small]),
        zero=float(small.sum()),
    )


def _add(maps: Iterable[Mapping[int, float]]) -> dict[int, float]:
    out: dict[int, float] = {}
    for m in maps:
        for k, c in m.items():
            out[k] = out.get(k, 0.0) + c
    return dict(sorted(out.items()))


def merge_sketches(sketches: Iterable[Sketch]) -> Sketch:
    """The sketch of the union of the sketches' values (same relative accuracy required)."""
    items = list(sketches)
    if not items:
        raise ValueError("merge_sketches needs at least one sketch")
    accuracies = {s.relative_accuracy for s in items}
    if len(accuracies) > 1:
        raise ValueError(f"sketches of different relative accuracy cannot merge: {accuracies}")
    return Sketch(
        relative_accuracy=items[0].relative_accuracy,
        positive=_add(s.positive for s in items),
        negative=_add(s.negative for s in items),
        zero=float(sum(s.zero for s in items)),
    )
