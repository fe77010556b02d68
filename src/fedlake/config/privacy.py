"""The ``[privacy]`` section: differential privacy and its budget.

``privacy = {epsilon = 3, delta = 1e-5}`` alone gives central DP-FedAvg with adaptive
clipping, Poisson client sampling and the noise multiplier that fits all the configured
rounds in the budget.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedlake.config.section import Section


class PrivacyConfig(Section):
    """Differential privacy: mechanism, noise, clipping and the (epsilon, delta) budget."""

    # distributed: with secure aggregation, each client adds a share of Skellam noise
    mechanism: Literal["central", "local", "dpsgd", "distributed"] = "central"
    epsilon: float | None = Field(None, gt=0)  # the budget; None: report, do not enforce
    delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float | None = Field(None, gt=0)  # None: calibrated to the budget
    clip: float | None = Field(None, gt=0)  # central: initial clip when adaptive
    adaptive: bool | None = None  # central only; default true
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_lr: float = Field(0.2, gt=0)
    count_noise: float | None = Field(None, gt=0)  # None: max(clients per round / 20, z)
    sampling: Literal["poisson", "fixed"] = "poisson"  # how central DP samples clients
    accountant: Literal["pld", "rdp"] = "pld"
    noise: Literal["secure", "seeded"] = "secure"  # seeded: simulations only

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyConfig:
        if self.noise_multiplier is None and self.epsilon is None:
            raise ValueError(
                "give noise_multiplier, or epsilon to calibrate it to (or both: the run "
                "then stops before exceeding epsilon)"
            )
        if self.mechanism != "central":
            extra = sorted(
                {"adaptive", "target_quantile", "clip_lr", "count_noise", "sampling"}
                & self.model_fields_set
            )
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} apply to mechanism = 'central' only, not "
                    f"{self.mechanism!r}"
                )
        given = "accountant" in self.model_fields_set
        if self.mechanism == "distributed" and given and self.accountant != "rdp":
            raise ValueError(
                "mechanism 'distributed' is accounted by RDP only (the Skellam bound is an "
                "RDP bound): remove accountant or set it to 'rdp'"
            )
        if self.adaptive is False and "target_quantile" in self.model_fields_set:
            raise ValueError("target_quantile applies to adaptive clipping only")
        return self

    @property
    def is_adaptive(self) -> bool:
        """Central DP with adaptive clipping (the default for central)."""
        return self.mechanism == "central" and self.adaptive is not False

    @property
    def clip_norm(self) -> float:
        """The clip norm: given, or 0.1 (adaptive's start) / 1.0 (fixed, local, DP-SGD)."""
        if self.clip is not None:
            return self.clip
        return 0.1 if self.is_adaptive else 1.0
