"""Who takes part in one attempt of a round: the cohort, dropouts, attackers, workloads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedlake.attacks.adversary import Adversary
from fedlake.client.workload import Workload
from fedlake.core.state import round_rng
from fedlake.orchestration.sampling import Population, poisson_cohort, sample_cohort
from fedlake.privacy.plan import PrivacyPlan

COHORT_RNG, DROPOUT_RNG, STRAGGLER_RNG = 1, 2, 8  # purpose tags of round generators


@dataclass(frozen=True)
class Draw:
    """An attempt's cohort, its unavailable clients, attackers and partial workloads."""

    cohort: list[str]
    dropped: set[str]
    malicious: frozenset[str]
    work: dict[str, Workload]

    @property
    def active(self) -> list[str]:
        """The cohort's available clients, in cohort order."""
        return [c for c in self.cohort if c not in self.dropped]


def draw_attempt(
    client_ids: Sequence[str],
    *,
    size: int,
    seed: int,
    round_: int,
    attempt: int,
    population: Population,
    epochs: int,
    privacy: PrivacyPlan | None = None,
    adversary: Adversary | None = None,
) -> Draw:
    """Sample attempt ``attempt`` of round ``round_`` (0-based), reproducibly from ``seed``."""
    cohort_rng = round_rng(seed, round_, COHORT_RNG, attempt)
    if privacy is not None and privacy.poisson_clients:
        secret = None if privacy.secure_noise else cohort_rng
        cohort = poisson_cohort(client_ids, privacy.rate, secret)
    else:
        cohort = sample_cohort(client_ids, size, cohort_rng)
    dropped = population.dropped(cohort, round_rng(seed, round_, DROPOUT_RNG, attempt))
    malicious: frozenset[str] = frozenset()
    if adversary is not None:
        chosen = adversary.choose_in_round(cohort, seed=seed, round_=round_, attempt=attempt)
        malicious = chosen.difference(dropped)
    active = [c for c in cohort if c not in dropped]
    work = population.workloads(
        active, epochs=epochs, seed=seed, rng=round_rng(seed, round_, STRAGGLER_RNG, attempt)
    )
    return Draw(cohort, dropped, malicious, work)
