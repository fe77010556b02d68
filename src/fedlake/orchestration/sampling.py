"""Cohort sampling and the availability model of a client population."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class Population:
    """Availability model: each sampled client drops out (returns nothing) with ``dropout``."""

    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def dropped(self, cohort: Sequence[str], rng: np.random.Generator) -> set[str]:
        """The clients of ``cohort`` that drop out this round."""
        if self.dropout == 0:
            return set()
        mask = rng.random(len(cohort)) < self.dropout
        return {c for c, m in zip(cohort, mask, strict=True) if m}


def poisson_cohort(
    client_ids: Sequence[str], rate: float, rng: np.random.Generator | None
) -> list[str]:
    """Each client joins independently with probability ``rate`` (Poisson sampling; may be empty).

    ``rng`` None draws from a secure source. The sampling DP-FedAvg's accountant
    assumes: the cohort's size varies, and the aggregate divides by the expected size.
    """
    return [client_ids[int(i)] for i in poisson_sample(len(client_ids), rate, rng)]
