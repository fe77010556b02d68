"""Server optimisers as transforms on the aggregated delta (a pseudo-gradient)."""

from __future__ import annotations

from fedlake.core.transform import Transform, scale


def server_sgd(lr: float = 1.0) -> Transform:
    """Plain server step ``params += lr * mean_delta`` (lr=1 is FedAvg)."""
    if not lr > 0:
        raise ValueError(f"server lr must be > 0, got {lr}")
    return scale(lr)
