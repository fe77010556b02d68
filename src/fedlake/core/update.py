"""A client's contribution as the server sees it once decoded: named vectors, weight, metrics."""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

DELTA = "delta"


@dataclass(frozen=True)
class ClientUpdate:
    """One client's decoded contribution to a round.

    Args:
        client_id: stable id of the client.
        vectors: named flat float32 vectors; ``delta`` (local - global) always, plus those
            the algorithm's server plugins ask for (e.g. SCAFFOLD's ``control``).
        weight: aggregation weight (number of training examples for FedAvg).
        metrics: scalar training metrics (loss, examples, steps, seconds, ...).
    """

    client_id: str
    vectors: Mapping[str, np.ndarray]
    weight: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def delta(self) -> np.ndarray:
        """The model delta (local params - global params)."""
        return self.vectors[DELTA]


def finite_number(value: object) -> float | None:
    """``value`` as a finite float, or None when it is missing, not a number, NaN or infinite.

    Booleans are not numbers here: ``True`` as a weight or a metric is a bug, not 1.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def validate_update(update: ClientUpdate, dim: int, *, finite: Collection[str] = ()) -> str | None:
    """Return why ``update`` must be rejected, or None when it is well-formed.

    ``finite``: names of vectors already known to hold finite values only (their norm
    came out finite): not looked through again.
    """
    if DELTA not in update.vectors:
        return "missing 'delta' vector"
    for name, v in update.vectors.items():
        v = np.asarray(v)
        if v.dtype != np.float32:
            return f"vector {name!r} has dtype {v.dtype}, expected float32"
        if v.shape != (dim,):
            return f"vector {name!r} has shape {v.shape}, expected ({dim},)"
        if name not in finite and not np.isfinite(v).all():
            bad = int((~np.isfinite(v)).sum())
            return f"vector {name!r} has {bad} non-finite values (NaN/Inf)"
    weight = finite_number(update.weight)
    if weight is None or weight <= 0:
        return f"weight must be a positive finite number, got {update.weight!r}"
    return None
