"""Model poisoning: malicious clients send crafted deltas instead of what they trained."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from fedlake.core.checks import check_positive
from fedlake.simulation.attacks.base import Attack


@dataclass(frozen=True)
class SignFlip(Attack):
    """Send ``-scale`` times the honestly trained delta: pushes the model uphill.

    ``scale = 1`` is the "bit flipping" attack of Karimireddy, He and Jaggi (ICML 2021).
    With the default ``scale = 4`` a fifth of the cohort cancels the honest mean and a
    larger share reverses it.
    """

    scale: float = 4.0

    def __post_init__(self) -> None:
        check_positive("sign_flip scale", self.scale)

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "sign_flip"

    def craft(
        self, own: np.ndarray, honest: np.ndarray, *, cohort: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``-scale * own``."""
        return (-self.scale * own).astype(np.float32)


@dataclass(frozen=True)
class GaussianNoise(Attack):
    """Send pure noise N(0, sigma^2 I): a large-norm, uninformed attack.

    Blanchard et al. (NeurIPS 2017) evaluate Krum against it. ``sigma`` is absolute: the
    default 100 is thousands of times the per-coordinate size of typical deltas (about
    0.01 to 0.1 for the examples' models), so the attack is a large-norm one.
    """

    sigma: float = 100.0

    def __post_init__(self) -> None:
        check_positive("gaussian sigma", self.sigma)

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "gaussian"

    def craft(
        self, own: np.ndarray, honest: np.ndarray, *, cohort: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Fresh Gaussian noise for every malicious client."""
        return rng.normal(0.0, self.sigma, size=own.shape).astype(np.float32)


def alie_z(cohort: int, malicious: int) -> float:
    """Baruch et al.'s ``z_max``: ``s = floor(n/2 + 1) - m``, ``z = Phi^-1((n - s) / n)``.

    The probability is clipped to [0.5, 1 - 1e-6] (z in [0, 4.75]) for the corner cases
    the paper leaves out (a malicious majority, or none at all).
    """
    s = cohort // 2 + 1 - malicious
    p = min(max((cohort - s) / cohort, 0.5), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def _reference(own: np.ndarray, honest: np.ndarray) -> np.ndarray:
    """The updates the omniscient adversary estimates from: the honest ones, else its own."""
    return honest if honest.shape[0] else own


@dataclass(frozen=True)
class ALittleIsEnough(Attack):
    """A Little Is Enough (Baruch, Baruch and Goldberg, NeurIPS 2019).

    Every malicious client sends ``mu - z * sigma``: the coordinate-wise mean of the
    honest deltas shifted by ``z`` standard deviations, small enough to look honest to
    median, trimmed mean and Krum. ``z = None`` uses the paper's ``z_max`` for the round's
    n and m (see :func:`alie_z`).

    ``sigma`` is the population standard deviation (``ddof = 0``) of the honest deltas:
    the simulated adversary is omniscient and sees every honest update of the round, so
    they are the whole population whose spread the paper's ``sigma_j`` describes, not a
    sample to estimate it from. Reimplementations built on ``torch.std`` use the sample
    standard deviation (``ddof = 1``), ``sqrt(h / (h - 1))`` times larger for ``h``
    honest updates: the same as running this attack with ``z`` scaled by that factor
    (1.05x at h = 10, 1.005x at h = 100). With no honest update to see, the colluders
    use their own deltas, with the same estimator.
    """

    z: float | None = None

    def __post_init__(self) -> None:
        if self.z is not None:
            check_positive("alie z", self.z)

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "alie"

    def craft(
        self, own: np.ndarray, honest: np.ndarray, *, cohort: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``mu - z sigma`` of the honest deltas, for every malicious client."""
        ref = _reference(own, honest).astype(np.float64)
        z = self.z if self.z is not None else alie_z(cohort, own.shape[0])
        crafted = ref.mean(axis=0) - z * ref.std(axis=0, ddof=0)  # population std: see above
        return np.tile(crafted.astype(np.float32), (own.shape[0], 1))


@dataclass(frozen=True)
class InnerProductManipulation(Attack):
    """Inner-product manipulation (Xie, Koyejo and Gupta, "Fall of Empires", UAI 2019).

    Every malicious client sends ``-epsilon`` times the honest clients' mean delta, so the
    aggregate's inner product with the true descent direction turns negative. Small
    ``epsilon`` (the default 0.1) hides among honest updates and defeats Krum-like rules;
    large ``epsilon`` overwhelms the mean.
    """

    epsilon: float = 0.1

    def __post_init__(self) -> None:
        check_positive("ipm epsilon", self.epsilon)

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "ipm"

    def craft(
        self, own: np.ndarray, honest: np.ndarray, *, cohort: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``-epsilon * mean(honest)`` for every malicious client."""
        mean = _reference(own, honest).astype(np.float64).mean(axis=0)
        return np.tile((-self.epsilon * mean).astype(np.float32), (own.shape[0], 1))
