"""The malicious client program: an honest client whose training data the attack poisons."""

from __future__ import annotations

from typing import Any

from fedlake.core.plugin import ClientPlugin, RoundContext
from fedlake.core.rng import client_key, round_rng
from fedlake.simulation.attacks.base import ATTACK_RNG, POISON, Attack

__all__ = ["MALICIOUS", "malicious_plugins", "poisoning"]

MALICIOUS = "malicious"  # the client variant of the round's attackers


def poisoning(attack: Attack) -> ClientPlugin:
    """Train on ``attack.poison`` of the client's data; report the clean example count.

    Reporting the clean count keeps the attacker's weight what an honest client's would
    be (stealthier). The poison draws from its own generator, per (round, attempt, client).
    """

    def before_fit(ctx: RoundContext, state: Any) -> tuple[RoundContext, Any]:
        task = ctx.task
        rng = round_rng(
            task.seed, task.round, ATTACK_RNG, task.attempt, POISON, client_key(ctx.client_id)
        )
        claimed = ctx.dataset.num_train
        return ctx.evolve(dataset=attack.poison(ctx.dataset, rng), claimed=claimed), state

    return ClientPlugin("poisoning", before_fit=before_fit)


def malicious_plugins(attack: Attack) -> tuple[ClientPlugin, ...]:
    """The plugins a malicious client runs before the algorithm's (picklable as a partial)."""
    return (poisoning(attack),)
