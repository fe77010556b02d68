"""Cohort sampling: how many clients a round asks, and which (uniformly or Poisson)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlake.core.rng import round_rng
from fedlake.privacy.noise import poisson_sample


@dataclass(frozen=True)
class CohortSpec:
    """How many clients a round samples: a count, or a fraction of the population."""

    count: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of clients_per_round (count) or fraction")
        if self.count is not None and self.count < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {self.count}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def size(self, population: int) -> int:
        """Cohort size for a population of ``population`` clients."""
        if self.count is not None:
            if self.count > population:
                raise ValueError(
                    f"clients_per_round ({self.count}) exceeds the number of clients ({population})"
                )
            return self.count
        assert self.fraction is not None
        return max(1, int(round(self.fraction * population)))


def sample_cohort(client_ids: Sequence[str], size: int, rng: np.random.Generator) -> list[str]:
    """Sample ``size`` distinct clients uniformly without replacement, in a stable order."""
    n = len(client_ids)
    if not 1 <= size <= n:
        raise ValueError(f"cohort size must be in [1, {n}], got {size}")
    idx = rng.choice(n, size=size, replace=False)
    return [client_ids[int(i)] for i in np.sort(idx)]


def poisson_cohort(
    client_ids: Sequence[str], rate: float, rng: np.random.Generator | None
) -> list[str]:
    """Each client joins independently with probability ``rate`` (Poisson sampling; may be empty).

    ``rng`` None draws from a secure source. The sampling DP-FedAvg's accountant
    assumes: the cohort's size varies, and the aggregate divides by the expected size.
    """
    return [client_ids[int(i)] for i in poisson_sample(len(client_ids), rate, rng)]


COHORT_RNG = 1  # purpose tag of the cohort's generator


def draw_cohort(
    client_ids: Sequence[str],
    *,
    size: int,
    seed: int,
    round_: int,
    attempt: int,
    poisson_rate: float | None = None,
    secure: bool = False,
) -> list[str]:
    """The cohort of attempt ``attempt`` of round ``round_`` (0-based), reproducible from ``seed``.

    ``poisson_rate``: each client joins with that probability (DP-FedAvg's sampling), from
    the secure source when ``secure`` (the run's seed is public); else ``size`` clients
    uniformly without replacement.
    """
    rng = round_rng(seed, round_, COHORT_RNG, attempt)
    if poisson_rate is not None:
        return poisson_cohort(client_ids, poisson_rate, None if secure else rng)
    return sample_cohort(client_ids, size, rng)
