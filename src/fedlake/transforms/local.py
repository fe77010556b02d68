"""Local-step transforms: rewrite each minibatch gradient during a client's training."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from fedlake.core.transform import Affine, Transform


def _non_negative(name: str, value: float) -> float:
    real = isinstance(value, Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number in [0, inf), got {value!r}")
    return float(value)


def proximal(mu: float, *, anchor: np.ndarray | None = None) -> Transform:
    """FedProx's proximal term: ``g + mu * (w - w_global)``, anchored at the start params.

    Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in
    Heterogeneous Networks", MLSys 2020. ``init`` receives the global model the client
    starts from and anchors there, unless ``anchor`` is given (Ditto's personal model
    is pulled towards the global one while starting from its own); ``mu = 0`` leaves
    gradients unchanged. Works on stacked cohorts.
    """
    mu = _non_negative("mu", mu)
    factor = np.float32(mu)
    fixed = None if anchor is None else np.array(anchor, dtype=np.float32, copy=True)

    def init(params: np.ndarray) -> np.ndarray:
        if fixed is not None:
            if fixed.shape != params.shape[-1:] and fixed.shape != params.shape:
                raise ValueError(f"the anchor is shaped {fixed.shape}, the params {params.shape}")
            return fixed
        return np.array(params, dtype=np.float32, copy=True)

    def update(
        vec: np.ndarray, state: np.ndarray, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if not mu:
            return vec, state
        return vec + factor * (params - state), state

    return Transform(init, update, stacked=True, affine=Affine(mu, fixed, None))


def add_correction(correction: np.ndarray) -> Transform:
    """Add a fixed vector to every gradient (SCAFFOLD's ``c - c_i``; stacked: one row each).

    Karimireddy, Kale, Mohri, Reddi, Stich and Suresh, "SCAFFOLD: Stochastic
    Controlled Averaging for Federated Learning", ICML 2020.
    """
    corr = np.asarray(correction, dtype=np.float32)
    if not np.isfinite(corr).all():
        raise ValueError("the gradient correction has non-finite values (NaN/Inf)")

    def init(params: np.ndarray) -> None:
        if params.shape != corr.shape and params.shape[-1:] != corr.shape:
            raise ValueError(
                f"the gradient correction is shaped {corr.shape}, the params {params.shape}"
            )
        return None

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        return vec + corr, state

    return Transform(init, update, stacked=True, affine=Affine(0.0, None, corr))
