"""Local DP: every client clips and noises its own update before it leaves the device.

For deployments where the server is not trusted. A client's whole dataset may change
its clipped update anywhere in the ball of radius ``clip``, so two neighbouring inputs
differ by at most ``2 clip`` (replace-one): the guarantee of one release is that of a
Gaussian mechanism with multiplier ``noise_multiplier / 2``, composed over the rounds
the client took part in (per client, no amplification: the client knows it was asked).
"""

from __future__ import annotations

import numpy as np

from fedlake.core.checks import check_positive
from fedlake.core.transform import Transform
from fedlake.privacy.noise import noise_source


def local_gaussian(*, clip: float, noise_multiplier: float, secure_noise: bool = True) -> Transform:
    """Upload transform: clip the delta to ``clip`` and add N(0, (z clip)^2) per coordinate."""
    bound = check_positive("clip", clip)
    z = check_positive("noise_multiplier", noise_multiplier)

    def init(params: np.ndarray) -> None:
        return None

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        v = np.asarray(vec, dtype=np.float64)
        norm = float(np.linalg.norm(v))
        if norm > bound:
            v = v * (bound / norm)
        noisy = v + noise_source(secure_noise, rng).normal(v.size, z * bound)
        return noisy.astype(np.float32), state

    return Transform(init, update)


def local_multiplier(noise_multiplier: float) -> float:
    """The accountant's multiplier of one local release (replace-one: sensitivity 2 clip)."""
    return noise_multiplier / 2.0
