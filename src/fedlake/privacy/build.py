"""The noise calibration and the round loop's plan of the ``[privacy]`` settings (server side)."""

from __future__ import annotations

from typing import Literal

from fedlake.privacy.accounting import Accountant
from fedlake.privacy.calibration import noise_for_epsilon, plan_noise
from fedlake.privacy.plan import Budget, PrivacyPlan
from fedlake.privacy.settings import DPSettings


def calibrate(
    mechanism: str,
    *,
    epsilon: float,
    delta: float,
    rounds: int,
    sampling: Literal["poisson", "fixed"],
    population: int,
    cohort: int,
    accountant: Accountant,
) -> float:
    """The noise multiplier that fits ``rounds`` rounds in (epsilon, delta)."""
    if mechanism == "dpsgd":
        raise ValueError(
            "mechanism 'dpsgd' needs noise_multiplier (each client's cost depends on its own "
            "data size; the budget is then enforced per client)"
        )
    if mechanism == "distributed":  # every round, no amplification, add/remove, RDP
        return noise_for_epsilon(
            epsilon,
            delta,
            sampling_rate=1.0,
            rounds=rounds,
            sampling="none",
            relation="add_remove",
            accountant="rdp",
        )
    if mechanism == "local":  # every round, no amplification, sensitivity 2 clip
        z = noise_for_epsilon(
            epsilon,
            delta,
            sampling_rate=1.0,
            rounds=rounds,
            sampling="none",
            relation="replace_one",
            accountant=accountant,
        )
        return 2 * z
    return plan_noise(  # DP-FedAvg's planned rounds
        epsilon,
        delta,
        num_clients=population,
        clients_per_round=cohort,
        rounds=rounds,
        sampling=sampling,
        accountant=accountant,
    )


def make_plan(dp: DPSettings, *, population: int, cohort: int) -> PrivacyPlan:
    """The round loop's privacy plan for ``dp`` (its budget: ``dp.epsilon`` at ``dp.delta``)."""
    mechanism = dp.mechanism
    if mechanism == "central" and dp.adaptive is not None:
        mechanism = "adaptive"
    return PrivacyPlan(
        mechanism=mechanism,
        noise_multiplier=dp.noise_multiplier,
        budget=Budget(epsilon=dp.epsilon, delta=dp.delta),
        population=population,
        cohort=cohort,
        sampling=dp.sampling if dp.mechanism == "central" else "none",
        accountant="rdp" if dp.mechanism == "distributed" else dp.accountant,
        secure_noise=dp.secure_noise,
    )
