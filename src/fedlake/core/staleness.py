"""FedBuff's staleness weights: how much an update counts that is ``tau`` versions behind.

Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation" (AISTATS
2022), weight a stale update by ``1/sqrt(1 + tau)``; polynomial decay ``(1 + tau)^-a``
generalises it (Xie et al., "Asynchronous Federated Optimization", 2019).
"""

from __future__ import annotations

import math

__all__ = ["staleness_weight"]


def staleness_weight(rule: str, tau: int) -> float:
    """The weight of an update ``tau`` versions behind under ``rule``."""
    if rule == "sqrt":
        return 1.0 / math.sqrt(1.0 + tau)
    if rule == "none":
        return 1.0
    if rule.startswith("poly:"):
        try:
            a = float(rule[5:])
        except ValueError:
            a = -1.0
        if a >= 0:
            return float((1.0 + tau) ** -a)
    raise ValueError(f"unknown staleness rule {rule!r}; known: sqrt, none, poly:<a >= 0>")
