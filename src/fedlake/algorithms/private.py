"""A recipe made differentially private: DP-FedAvg's aggregator, local noise, or DP-SGD."""

from __future__ import annotations

import dataclasses

from fedlake.core.algorithm import Algorithm, SampleDP, with_plugins
from fedlake.core.transform import chain
from fedlake.plugins.dpsgd_budget import dpsgd_budget
from fedlake.plugins.private_reports import private_reports
from fedlake.privacy.central import dp_fedavg
from fedlake.privacy.local import local_gaussian
from fedlake.privacy.settings import DPSettings

__all__ = ["apply_dp"]


def apply_dp(recipe: Algorithm, dp: DPSettings) -> Algorithm:
    """``recipe`` with the DP mechanism: DP-FedAvg's aggregator, local noise, or DP-SGD."""
    if recipe.has("scaffold"):
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
    if dp.mechanism == "distributed":  # the noise is added in the secure encoding
        return with_plugins(recipe, client=(private_reports(),))
    if dp.mechanism == "local":
        noise = local_gaussian(
            clip=dp.clip, noise_multiplier=dp.noise_multiplier, secure_noise=dp.secure_noise
        )
        noisy = dataclasses.replace(recipe, upload=chain(recipe.upload, noise))
        return with_plugins(noisy, client=(private_reports(),))
    sample_dp = SampleDP(
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.clip,
        secure_noise=dp.secure_noise,
        epsilon=dp.epsilon,
        delta=dp.delta,
        accountant=dp.accountant,
    )
    return dataclasses.replace(  # one step: an Algorithm with DP-SGD needs its budget plugin
        recipe,
        local=dataclasses.replace(recipe.local, dp=sample_dp),
        client_plugins=(*recipe.client_plugins, dpsgd_budget(sample_dp)),
    )
