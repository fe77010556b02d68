"""Adaptive server optimisers: FedAdagrad, FedAdam and FedYogi.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar and McMahan, "Adaptive Federated
Optimization", ICLR 2021, Algorithm 2. With ``delta`` the round's aggregated delta::

    m = beta1 * m + (1 - beta1) * delta
    v = v + delta**2                                        (Adagrad)
    v = beta2 * v + (1 - beta2) * delta**2                  (Adam)
    v = v - (1 - beta2) * delta**2 * sign(v - delta**2)     (Yogi)
    step = lr * m / (sqrt(v) + tau)

As in the paper there is no bias correction; ``m`` starts at 0 and ``v`` at ``tau**2``
(the paper asks for ``v_{-1} >= tau**2``). The state is kept in float64; steps are
float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fedlake.core.checks import check_fraction, check_positive
from fedlake.core.transform import Transform
from fedlake.transforms.server import frozen64, server_lr

# (v, delta**2) -> new v
SecondMoment = Callable[[np.ndarray, np.ndarray], np.ndarray]


class AdaptiveState(NamedTuple):
    """First and second moment estimates (float64, read-only)."""

    m: np.ndarray
    v: np.ndarray


def adaptive(lr: float, *, beta1: float, tau: float, second_moment: SecondMoment) -> Transform:
    """The shared skeleton of Algorithm 2; ``second_moment`` is the variant's ``v`` update."""
    rate = server_lr(lr)
    b1 = check_fraction("beta1", beta1)
    eps = check_positive("tau", tau)

    def init(params: np.ndarray) -> AdaptiveState:
        shape = np.shape(params)[-1:]
        return AdaptiveState(
            frozen64(np.zeros(shape, dtype=np.float64)),
            frozen64(np.full(shape, eps * eps, dtype=np.float64)),
        )

    def update(
        vec: np.ndarray, state: AdaptiveState, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, AdaptiveState]:
        delta = np.asarray(vec, dtype=np.float64)
        m = b1 * state.m + (1.0 - b1) * delta
        v = second_moment(state.v, delta * delta)
        step = rate * m / (np.sqrt(v) + eps)
        return step.astype(np.float32), AdaptiveState(frozen64(m), frozen64(v))

    return Transform(init, update)


def fedadagrad(lr: float = 0.1, *, beta1: float = 0.0, tau: float = 1e-3) -> Transform:
    """FedAdagrad: ``v = v + delta**2`` (Reddi et al., ICLR 2021, Algorithm 2)."""

    def second_moment(v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return v + sq

    return adaptive(lr, beta1=beta1, tau=tau, second_moment=second_moment)


def fedadam(
    lr: float = 0.1, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
) -> Transform:
    """FedAdam: ``v = beta2 * v + (1 - beta2) * delta**2`` (Reddi et al., ICLR 2021)."""
    b2 = check_fraction("beta2", beta2)

    def second_moment(v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return b2 * v + (1.0 - b2) * sq

    return adaptive(lr, beta1=beta1, tau=tau, second_moment=second_moment)


def fedyogi(
    lr: float = 0.1, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
) -> Transform:
    """FedYogi: ``v = v - (1 - beta2) * delta**2 * sign(v - delta**2)`` (Reddi et al., 2021)."""
    b2 = check_fraction("beta2", beta2)

    def second_moment(v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return v - (1.0 - b2) * sq * np.sign(v - sq)

    return adaptive(lr, beta1=beta1, tau=tau, second_moment=second_moment)
