"""Cohorts for the aggregator tests: client updates built from plain rows of numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedlake.core.aggregator import Aggregator
from fedlake.core.update import ClientUpdate


def updates(rows: Any, weights: Sequence[float] | None = None) -> list[ClientUpdate]:
    """One update per row (a 1-D ``rows`` is one coordinate per client), weights 1 by default."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    ws = [1.0] * len(matrix) if weights is None else list(weights)
    return [
        ClientUpdate(f"c{i}", {"delta": row.copy()}, float(w))
        for i, (row, w) in enumerate(zip(matrix, ws, strict=True))
    ]


def run(agg: Aggregator, rows: Any, weights: Sequence[float] | None = None) -> np.ndarray:
    """Aggregate ``rows`` from the rule's initial state and return the vector."""
    ups = updates(rows, weights)
    vec, _ = agg.aggregate(ups, agg.init(ups[0].delta.shape[0]))
    return vec
