"""Cohort sampling and the availability model of a client population."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlake.client.local import client_key
from fedlake.client.workload import Workload
from fedlake.privacy.noise import poisson_sample

STRAGGLER_POLICIES = ("keep", "drop")
SPEED_RNG = 9  # purpose tag of the per-client device-speed generator


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
    """Availability and device heterogeneity of a simulated population.

    Args:
        dropout: chance that a sampled client is unavailable (returns nothing).
        stragglers: share of each round's available clients that straggle: they finish
            a uniformly random part of their work, 1..E-1 of E local epochs (FedProx's
            setup, Li et al. MLSys 2020), or a random part of their one epoch when E = 1.
        policy: ``"keep"`` uses stragglers' partial work, ``"drop"`` waits for nobody
            and discards any client that could not finish everything.
        deadline_s: the round's deadline in simulated seconds (None: none); a client
            finishes ``floor(deadline_s * speed_i)`` steps at most.
        speed: median device speed, in local steps per simulated second.
        speed_spread: standard deviation of log-speed across devices (each device's
            speed is fixed for the run, drawn from the seed and its id).
    """

    dropout: float = 0.0
    stragglers: float = 0.0
    policy: str = "keep"
    deadline_s: float | None = None
    speed: float = 100.0
    speed_spread: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.stragglers <= 1:
            raise ValueError(f"stragglers must be in [0, 1], got {self.stragglers}")
        if self.policy not in STRAGGLER_POLICIES:
            raise ValueError(
                f"straggler policy must be one of {STRAGGLER_POLICIES}, got {self.policy!r}"
            )
        if self.deadline_s is not None and not (
            math.isfinite(self.deadline_s) and self.deadline_s > 0
        ):
            raise ValueError(f"deadline_s must be > 0 seconds, got {self.deadline_s}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be > 0 steps per second, got {self.speed}")
        if not (math.isfinite(self.speed_spread) and self.speed_spread >= 0):
            raise ValueError(f"speed_spread must be >= 0, got {self.speed_spread}")

    @property
    def heterogeneous(self) -> bool:
        """Whether some clients may do less than their full local work."""
        return self.stragglers > 0 or self.deadline_s is not None

    def device_speed(self, client_id: str, seed: int) -> float:
        """The fixed speed (steps per simulated second) of ``client_id``'s device."""
        z = np.random.default_rng([int(seed), SPEED_RNG, client_key(client_id)]).standard_normal()
        return float(self.speed * math.exp(self.speed_spread * z))

    def workloads(
        self, clients: Sequence[str], *, epochs: int, seed: int, rng: np.random.Generator
    ) -> dict[str, Workload]:
        """The round's partial workloads (clients not listed do all their work)."""
        if not self.heterogeneous or not clients:
            return {}
        drop = self.policy == "drop"
        out: dict[str, Workload] = {}
        count = round(self.stragglers * len(clients))
        if count:
            chosen = rng.choice(len(clients), size=count, replace=False)
            for i in np.sort(chosen):
                if epochs > 1:
                    fraction = int(rng.integers(1, epochs)) / epochs
                else:
                    fraction = 1.0 - float(rng.random())  # in (0, 1]
                out[clients[int(i)]] = Workload(fraction=fraction, drop_partial=drop)
        if self.deadline_s is not None:
            for c in clients:
                cap = math.floor(self.deadline_s * self.device_speed(c, seed))
                w = out.get(c, Workload(drop_partial=drop))
                out[c] = Workload(fraction=w.fraction, max_steps=cap, drop_partial=drop)
        return out

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
