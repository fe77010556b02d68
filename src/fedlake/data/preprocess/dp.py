"""Differentially private summaries: Laplace or Gaussian noise on every released count.

What the guarantee covers: one client's summary is epsilon-DP (Laplace) or
(epsilon, delta)-DP (Gaussian) with respect to adding or removing one of that
client's rows, for the *values* of its counts: missing counts, sketch bucket counts
and category counts. A row adds one to exactly one count per column, so the
sensitivity is the number of columns (L1) or its square root (L2). Sums and squared
deviations are not released under DP (their sensitivity is unbounded without
clipping); the server takes means and variances from the noisy sketches instead.
Not covered: *which* keys appear (category names, occupied sketch buckets) is
released as is; rare categories are folded into "other" on the server
(``min_category_count``), which limits what reaches the model but is not counted
in epsilon. Summaries of different clients cover disjoint rows (parallel
composition), so the merged summary keeps each row's epsilon.

References: C. Dwork, F. McSherry, K. Nissim and A. Smith, "Calibrating noise to
sensitivity in private data analysis", TCC 2006 (Laplace); C. Dwork and A. Roth,
"The algorithmic foundations of differential privacy", 2014, Thm A.1 (Gaussian).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal, TypeVar

import numpy as np

from fedlake.data.preprocess.sketch import Sketch
from fedlake.data.preprocess.summary import ClientSummary, ColumnSummary

__all__ = ["MECHANISMS", "noise_scale", "noisy_summary"]

K = TypeVar("K", int, str)
Mechanism = Literal["laplace", "gaussian"]
MECHANISMS: tuple[Mechanism, ...] = ("laplace", "gaussian")


def noise_scale(
    columns: int, *, epsilon: float, mechanism: Mechanism = "laplace", delta: float = 1e-5
) -> float:
    """Laplace scale b = C / epsilon, or Gaussian sigma = sqrt(C * 2 ln(1.25 / delta)) / epsilon.

    Raises:
        ValueError: a non-positive epsilon or column count, a delta outside (0, 1), an
            unknown mechanism, or epsilon >= 1 for the Gaussian (its bound needs < 1).
    """
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if mechanism == "laplace":
        return columns / epsilon
    if mechanism != "gaussian":
        raise ValueError(
            f"unknown noise mechanism {mechanism!r}; accepted: {', '.join(MECHANISMS)}"
        )
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if epsilon >= 1.0:
        raise ValueError(
            f"gaussian summary noise needs epsilon < 1 (the classical bound), got {epsilon}; "
            "use laplace for larger epsilon"
        )
    return math.sqrt(columns * 2.0 * math.log(1.25 / delta)) / epsilon


def noisy_summary(
    summary: ClientSummary,
    *,
    epsilon: float,
    rng: np.random.Generator,
    mechanism: Mechanism = "laplace",
    delta: float = 1e-5,
) -> ClientSummary:
    """The summary with noise on every count and its sums withheld (client side, seeded)."""
    if summary.clients != 1 or summary.epsilon is not None:
        raise ValueError("noise is added to one client's own summary, before merging")
    scale = noise_scale(len(summary.columns), epsilon=epsilon, mechanism=mechanism, delta=delta)

    def noise(n: int) -> np.ndarray:
        if mechanism == "laplace":
            return rng.laplace(0.0, scale, size=n)
        return rng.normal(0.0, scale, size=n)

    def noisy_map(m: Mapping[K, float]) -> dict[K, float]:
        keys = sorted(m)  # a fixed order: the same noise for the same summary and seed
        noised = np.array([m[k] for k in keys], dtype=np.float64) + noise(len(keys))
        return dict(zip(keys, noised.tolist(), strict=True))

    cols: list[ColumnSummary] = []
    for col in summary.columns:
        missing = float(col.missing + noise(1)[0])
        if col.sketch is not None:
            sk = col.sketch
            sketch = Sketch(
                relative_accuracy=sk.relative_accuracy,
                positive=noisy_map(sk.positive),
                negative=noisy_map(sk.negative),
                zero=float(sk.zero + noise(1)[0]),
            )
            cols.append(replace(col, missing=missing, sketch=sketch, total=None, sq_dev=None))
        else:
            other = float(col.other + noise(1)[0])
            cols.append(
                replace(col, missing=missing, categories=noisy_map(col.categories), other=other)
            )
    return replace(summary, columns=tuple(cols), epsilon=float(epsilon), mechanism=mechanism)
