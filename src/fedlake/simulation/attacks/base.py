"""What a malicious client does in a simulated round: poison its data, craft its update.

Attacks are frozen dataclasses (they travel to spawn workers with the client job).
``poison`` runs on the client before local training (data poisoning); ``craft`` runs
once per round for all the round's malicious clients together, after training, on
decoded deltas (model poisoning), and may use the honest clients' deltas: the
simulated adversary is *omniscient*, the strongest threat model, so a defence that
holds here holds against weaker attackers too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedlake.data.base import ClientDataset

ATTACK_RNG = 8  # purpose tag of the generators of attacks, then one of these streams:
CHOOSE, ENCODE, CRAFT, POISON = 0, 1, 2, 3  # who is malicious; crafted payloads; crafting; data


def malicious_count(cohort: int, fraction: float) -> int:
    """Malicious clients in a cohort of ``cohort``: ``floor(fraction * cohort)``."""
    return int(math.floor(fraction * cohort + 1e-9))


@dataclass(frozen=True)
class Attack:
    """The honest behaviour; attacks override ``poison``, ``craft`` or both."""

    @property
    def name(self) -> str:
        """The attack's config name."""
        return "none"

    @property
    def poisons(self) -> bool:
        """Whether the attack changes the malicious clients' training data."""
        return type(self).poison is not Attack.poison

    @property
    def crafts(self) -> bool:
        """Whether the attack replaces the malicious clients' updates after training."""
        return type(self).craft is not Attack.craft

    def poison(self, data: ClientDataset, rng: np.random.Generator) -> ClientDataset:
        """The training data a malicious client really trains on."""
        return data

    def craft(
        self, own: np.ndarray, honest: np.ndarray, *, cohort: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The deltas (m, d) the round's m malicious clients send.

        Args:
            own: the deltas they computed by training (on poisoned data if any), (m, d).
            honest: the honest clients' deltas of the round, (h, d); h may be 0.
            cohort: how many clients report this round (n).
            rng: the round's attack generator.
        """
        return own
