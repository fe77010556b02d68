"""Server optimisers as transforms on the aggregated delta (a pseudo-gradient).

The input is the round's aggregated delta (mean of local - global, pointing towards the
clients); the output is the step *added* to the params. States are immutable: every
update returns new, read-only float64 arrays and never writes into the old ones.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedlake.core.checks import check_fraction, check_positive
from fedlake.core.transform import Transform, scale


def server_lr(lr: object) -> float:
    """``lr`` as a finite float > 0, or a ValueError naming the server lr."""
    return check_positive("server lr", lr)


def frozen64(values: np.ndarray) -> np.ndarray:
    """``values`` as a new read-only float64 array (a state that cannot be mutated)."""
    out = np.array(values, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def server_sgd(lr: float = 1.0) -> Transform:
    """Plain server step ``params += lr * mean_delta`` (lr=1 is FedAvg)."""
    return scale(server_lr(lr))


class MomentumState(NamedTuple):
    """FedAvgM's velocity (float64, read-only)."""

    velocity: np.ndarray


def server_momentum(lr: float = 1.0, momentum: float = 0.9, *, nesterov: bool = False) -> Transform:
    """Server momentum (FedAvgM): ``v = momentum * v + delta``, step ``lr * v``.

    Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for
    Federated Visual Classification", arXiv:1909.06335, 2019. With ``nesterov`` the step
    is ``lr * (momentum * v + delta)``. ``momentum = 0`` is :func:`server_sgd`.
    """
    rate = server_lr(lr)
    beta = check_fraction("momentum", momentum)
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be a bool, got {nesterov!r}")

    def init(params: np.ndarray) -> MomentumState:
        return MomentumState(frozen64(np.zeros(np.shape(params)[-1:], dtype=np.float64)))

    def update(
        vec: np.ndarray, state: MomentumState, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, MomentumState]:
        delta = np.asarray(vec, dtype=np.float64)
        velocity = beta * state.velocity + delta
        direction = beta * velocity + delta if nesterov else velocity
        return (rate * direction).astype(np.float32), MomentumState(frozen64(velocity))

    return Transform(init, update)
