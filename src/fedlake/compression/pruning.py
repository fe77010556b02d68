"""Magnitude pruning of the global model (Zhu & Gupta, "To prune, or not to prune",
ICLR workshop 2018, gradual schedule), with the mask shared by server and clients."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedlake.core.transform import Transform


@dataclass(frozen=True)
class MagnitudePruning:
    """Keep the largest-magnitude ``1 - sparsity`` of the weights.

    Sparsity ramps from 0 at ``start_round`` to ``sparsity`` at ``end_round`` along
    Zhu & Gupta's cubic schedule (``end_round = start_round``: all at once). Pruned
    weights are zero and stay zero: clients train only the survivors (their gradients
    are masked), and send only them.
    """

    sparsity: float
    start_round: int = 0
    end_round: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1:
            raise ValueError(f"pruning sparsity must be in (0, 1), got {self.sparsity}")
        if self.start_round < 0:
            raise ValueError(f"pruning start_round must be >= 0, got {self.start_round}")
        if self.end_round is not None and self.end_round < self.start_round:
            raise ValueError(
                f"pruning end_round ({self.end_round}) must be >= start_round ({self.start_round})"
            )

    def sparsity_at(self, round_: int) -> float:
        """Target sparsity in round ``round_`` (0-based)."""
        if round_ < self.start_round:
            return 0.0
        end = self.start_round if self.end_round is None else self.end_round
        if round_ >= end:
            return self.sparsity
        progress = (round_ - self.start_round) / (end - self.start_round)
        return self.sparsity * (1.0 - (1.0 - progress) ** 3)

    def mask(self, params: np.ndarray, round_: int) -> np.ndarray | None:
        """Surviving weights of ``params`` in round ``round_`` (None before pruning starts)."""
        s = self.sparsity_at(round_)
        if s <= 0:
            return None
        return magnitude_mask(params, s)


def magnitude_mask(params: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean mask of the ``d - floor(sparsity * d)`` largest |params| (ties: lower index)."""
    d = params.size
    # float noise: 0.57 * 100 prunes 57; and at least one weight always survives
    keep = max(min(d, 1), d - math.floor(round(sparsity * d, 6)))
    order = np.argsort(-np.abs(params), kind="stable")
    mask = np.zeros(d, dtype=bool)
    mask[order[:keep]] = True
    return mask


def mask_gradients(mask: np.ndarray) -> Transform:
    """A local-step transform that zeroes the gradient of pruned weights."""
    keep = mask.astype(np.float32)

    def init(params: np.ndarray) -> None:
        if params.shape[-1:] != keep.shape:
            raise ValueError(f"pruning mask has {keep.size} entries, the model {params.size}")
        return None

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        return vec * keep, state

    return Transform(init, update, stacked=True)
