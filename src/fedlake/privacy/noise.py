"""Where Gaussian noise comes from: a cryptographically secure source, or a seeded one.

Real deployments draw DP noise from ChaCha20 keyed by the operating system's entropy
(``os.urandom``) through ``cryptography``: numpy's generators (PCG64) are fast but
predictable from their output, and predictable noise can be subtracted. We write the
uniform-to-Gaussian step ourselves (Box-Muller on 53-bit uniforms) because no well-kept
library offers a secure Gaussian vector sampler for numpy; Opacus' ``secure_mode`` does
not work with torch 2.13. Seeded noise (reproducible) is for simulations only, and every
run that uses it says so.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from fedlake.core.extras import require

_TWO_53 = float(2**53)


class NoiseSource(Protocol):
    """Draws i.i.d. N(0, std^2) float64 vectors."""

    @property
    def secure(self) -> bool:
        """Whether the draws are unpredictable to anybody without the key (not seeded)."""
        ...

    def normal(self, size: int, std: float) -> np.ndarray:
        """``size`` independent N(0, std^2) draws (float64)."""
        ...


class SecureNoise:
    """Gaussian noise from a ChaCha20 keystream keyed with 256 bits of OS entropy."""

    secure = True

    def __init__(self) -> None:
        ciphers = require(
            "cryptography.hazmat.primitives.ciphers", extra="crypto", purpose="secure DP noise"
        )
        key, nonce = os.urandom(32), os.urandom(16)
        self._cipher = ciphers.Cipher(ciphers.algorithms.ChaCha20(key, nonce), mode=None)
        self._stream = self._cipher.encryptor()

    def _uniform(self, count: int) -> np.ndarray:
        """``count`` uniforms in (0, 1], 53 random bits each."""
        raw = self._stream.update(bytes(8 * count))
        bits = np.frombuffer(raw, dtype=np.uint64) >> np.uint64(11)
        return (bits.astype(np.float64) + 1.0) / _TWO_53

    def normal(self, size: int, std: float) -> np.ndarray:
        """``size`` N(0, std^2) draws by the Box-Muller transform."""
        size = int(size)
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        pairs = (size + 1) // 2
        u1, u2 = self._uniform(pairs), self._uniform(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u2
        out = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
        return out * float(std)


class SeededNoise:
    """Reproducible Gaussian noise from a numpy generator: simulations only."""

    secure = False

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def normal(self, size: int, std: float) -> np.ndarray:
        """``size`` N(0, std^2) draws from the seeded generator."""
        return self._rng.normal(0.0, float(std), size=int(size))


def secure_uniform(count: int) -> np.ndarray:
    """``count`` uniforms in (0, 1] nobody can predict (e.g. a DP run's Poisson sample)."""
    return SecureNoise()._uniform(int(count))


def poisson_sample(n: int, rate: float, rng: np.random.Generator | None) -> np.ndarray:
    """Indices of ``n`` units kept, each independently with probability ``rate``.

    ``rng`` None draws from the secure source: amplification by subsampling needs a
    sample nobody who knows the run's seed can predict (DP-SGD batches, DP cohorts).
    """
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
    # 1 - u: secure uniforms lie in (0, 1], and rate 1 must keep everybody
    uniform = 1.0 - secure_uniform(n) if rng is None else rng.random(n)
    return np.flatnonzero(uniform < rate)


def noise_source(secure: bool, rng: np.random.Generator) -> NoiseSource:
    """The secure source, or a seeded one built on ``rng`` (simulation only)."""
    return SecureNoise() if secure else SeededNoise(rng)
