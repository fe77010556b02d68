"""Distributed DP with secure aggregation: every client adds a share of Skellam noise.

With secure aggregation the server never sees an update, so it cannot add the noise
itself: each client clips its update to L2 norm ``clip``, encodes it in fixed point
(integers, ``scale`` levels per unit), and adds integer Skellam noise, the difference of
two Poisson draws, before masking. A sum of independent Skellam variables is a Skellam
variable, so the masked sum of ``m`` clients each adding variance ``mu / m_min`` carries
noise of variance at least ``mu`` whenever ``m >= m_min`` (the server refuses to unmask a
sum of fewer). The noise is added to integers after rounding, so rounding and the ring's
modulus are post-processing of each noised sum: nothing is lost to discretisation.

Neighbouring datasets differ in one user's data zeroed out ("zero-out" adjacency, as in
Kairouz et al., "Practical and Private (Deep) Learning without Sampling or Shuffling",
ICML 2021): that user's device still takes part and adds its noise share, so the two
sums carry the same noise and differ by one encoded update.

The guarantee (Agarwal, Kairouz and Liu, "The Skellam Mechanism for Differentially
Private Federated Learning", NeurIPS 2021, Theorem 3.5): for integer orders alpha > 1,
integer L2 and L1 sensitivities D2 and D1 and a per-coordinate variance mu,

    RDP(alpha) <= alpha D2^2 / (2 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2),
                                           3 D1 / (2 mu)),

which is at most the RDP of a Gaussian mechanism with variance ``mu / (1 + kappa)``,
``kappa = (1 + 3 D1 / D2^2) / mu`` (bound the ``min`` by its first term, and
``(2 alpha - 1) / alpha < 2``). :func:`skellam_variance` picks ``mu`` so that this
Gaussian has noise multiplier ``z``: the ledger records that Gaussian, accounted by RDP
(an RDP bound does not bound the privacy-loss distribution, so PLD is not used), with
no amplification by sampling (the server knows who was sampled). Stochastic rounding
moves a coordinate by less than one level, so ``D2 <= scale clip + sqrt(d)`` and
``D1 <= sqrt(d) D2`` for ``d`` values.

Noise source: numpy's Poisson sampler on randomgen's ChaCha bit generator (20 rounds)
keyed with 256 bits of OS entropy (no well-kept library samples Poisson variates from a
cryptographic stream otherwise); seeded noise is for simulations only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fedlake.core.checks import check_positive
from fedlake.core.extras import require

__all__ = [
    "DistributedDP",
    "min_survivors",
    "sensitivities",
    "skellam_noise",
    "skellam_variance",
]


@dataclass(frozen=True)
class DistributedDP:
    """Distributed DP's settings: noise multiplier, L2 clip, noise source, denominator.

    Attributes:
        noise_multiplier: z, the Gaussian-equivalent std over the L2 sensitivity.
        clip: the L2 bound of each client's update.
        denominator: the fixed divisor of the noised sum (the expected clients per round).
        secure_noise: draw from the OS-keyed ChaCha stream (False: seeded, simulation only).
    """

    noise_multiplier: float
    clip: float
    denominator: float
    secure_noise: bool = True

    def __post_init__(self) -> None:
        check_positive("noise_multiplier", self.noise_multiplier)
        check_positive("clip", self.clip)
        check_positive("denominator", self.denominator)


def sensitivities(*, clip: float, scale: float, dim: int) -> tuple[float, float]:
    """(L2, L1) sensitivity, in integer levels, of one client's encoded update of ``dim``
    values clipped to L2 norm ``clip`` and rounded at ``scale`` levels per unit."""
    l2 = check_positive("clip", clip) * check_positive("scale", scale) + math.sqrt(dim)
    return l2, math.sqrt(dim) * l2


def skellam_variance(noise_multiplier: float, *, clip: float, scale: float, dim: int) -> float:
    """mu, the Skellam variance per coordinate the summed noise needs for a Gaussian-
    equivalent RDP with multiplier ``noise_multiplier`` (see the module)."""
    z = check_positive("noise_multiplier", noise_multiplier)
    d2, d1 = sensitivities(clip=clip, scale=scale, dim=dim)
    mu0 = (z * d2) ** 2
    kappa = (1.0 + 3.0 * d1 / d2**2) / mu0
    return mu0 * (1.0 + kappa)  # kappa at mu0 >= kappa at this mu: the bound holds


def min_survivors(cohort: int, expected_dropout: float) -> int:
    """m_min: the fewest masked inputs whose noise shares sum to the full noise."""
    return max(1, math.ceil(cohort * (1.0 - expected_dropout) - 1e-9))


def _secure_generator() -> np.random.Generator:
    """numpy's samplers on a ChaCha20 keystream keyed from the OS (randomgen)."""
    randomgen = require("randomgen", extra="crypto", purpose="secure distributed-DP noise")
    key = int.from_bytes(os.urandom(32), "little")
    return np.random.Generator(randomgen.ChaCha(key=key, rounds=20))


def skellam_noise(
    size: int, variance: float, *, secure: bool, rng: np.random.Generator
) -> np.ndarray:
    """``size`` i.i.d. Skellam draws of ``variance`` (Poisson(v/2) - Poisson(v/2)), int64;
    from the secure source unless ``secure`` is False (then from ``rng``)."""
    v = check_positive("variance", variance)
    gen = _secure_generator() if secure else rng
    a = gen.poisson(v / 2.0, size=int(size))
    b = gen.poisson(v / 2.0, size=int(size))
    return a.astype(np.int64) - b.astype(np.int64)
