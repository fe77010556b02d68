"""Turn the ``[privacy]`` settings into a recipe change and a plan (used by the runner)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from fedlake.core.algorithm import Algorithm
from fedlake.core.transform import chain
from fedlake.privacy.accounting import Accountant
from fedlake.privacy.calibration import noise_for_epsilon, plan_noise
from fedlake.privacy.central import AdaptiveClip, dp_fedavg
from fedlake.privacy.local import local_gaussian
from fedlake.privacy.plan import Budget, PrivacyPlan


@dataclass(frozen=True)
class DPSettings:
    """The resolved DP settings of a run (picklable: workers rebuild the recipe from it)."""

    mechanism: str  # central | local | dpsgd
    noise_multiplier: float
    clip: float
    adaptive: AdaptiveClip | None
    sampling: str
    denominator: float
    seed: int
    secure_noise: bool
    epsilon: float | None = None  # DP-SGD: each client's own budget
    delta: float = 1e-5
    accountant: str = "pld"


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


def apply_dp(recipe: Algorithm, dp: DPSettings) -> Algorithm:
    """``recipe`` with the DP mechanism: DP-FedAvg's aggregator, local noise, or DP-SGD."""
    if recipe.scaffold:
        raise ValueError(
            "scaffold cannot run with differential privacy: its control variates would leave "
            "the clients un-noised (use fedavg or fedprox)"
        )
    if recipe.name == "fednova" and dp.mechanism != "dpsgd":
        raise ValueError(
            f"fednova cannot run with {dp.mechanism} DP: it needs each client's step count, "
            "which the mechanism does not protect (use fedavg or fedprox)"
        )
    if dp.mechanism == "central":
        aggregator = dp_fedavg(
            clip=dp.clip,
            noise_multiplier=dp.noise_multiplier,
            denominator=dp.denominator,
            seed=dp.seed,
            secure_noise=dp.secure_noise,
            adaptive=dp.adaptive,
        )
        return dataclasses.replace(recipe, aggregator=aggregator)
    if dp.mechanism == "local":
        noise = local_gaussian(
            clip=dp.clip, noise_multiplier=dp.noise_multiplier, secure_noise=dp.secure_noise
        )
        return dataclasses.replace(recipe, upload=chain(recipe.upload, noise), private_reports=True)
    from fedlake.core.algorithm import SampleDP

    sample_dp = SampleDP(
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.clip,
        secure_noise=dp.secure_noise,
        epsilon=dp.epsilon,
        delta=dp.delta,
        accountant=dp.accountant,
    )
    return dataclasses.replace(recipe, local=dataclasses.replace(recipe.local, dp=sample_dp))


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
        accountant=dp.accountant,
        secure_noise=dp.secure_noise,
    )
