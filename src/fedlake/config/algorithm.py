"""The ``[algorithm]`` and ``[personalization]`` sections: which recipe, and its settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fedlake.config.robustness import AggregatorConfig, MeanRule
from fedlake.config.section import Section

RecipeName = Literal[
    "fedavg", "fedprox", "scaffold", "fednova", "fedavgm", "fedadagrad", "fedadam", "fedyogi"
]
OWN_AVERAGING = ("scaffold", "fednova")  # recipes whose aggregation is part of the algorithm
# the recipe options beyond the common four, and the recipes that take each
OPTIONS: dict[str, tuple[str, ...]] = {
    "mu": ("fedprox", "fednova"),
    "momentum": ("fedavgm",),
    "beta1": ("fedadagrad", "fedadam", "fedyogi"),
    "beta2": ("fedadam", "fedyogi"),
    "tau": ("fedadagrad", "fedadam", "fedyogi"),
}


class AlgorithmConfig(Section):
    """The FL recipe and its hyperparameters (``server_lr`` unset: the recipe's default,
    1 for FedAvg-style steps, 0.1 for the adaptive server optimisers)."""

    name: RecipeName = "fedavg"
    client_lr: float = Field(0.05, gt=0)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    server_lr: float | None = Field(None, gt=0)
    mu: float | None = Field(None, ge=0, allow_inf_nan=False)
    momentum: float | None = Field(None, ge=0, lt=1)
    beta1: float | None = Field(None, ge=0, lt=1)
    beta2: float | None = Field(None, ge=0, lt=1)
    tau: float | None = Field(None, gt=0, allow_inf_nan=False)
    aggregator: AggregatorConfig = Field(default_factory=lambda: MeanRule(kind="mean"))

    @model_validator(mode="after")
    def _options_fit_the_recipe(self) -> AlgorithmConfig:
        for option, recipes in OPTIONS.items():
            if getattr(self, option) is not None and self.name not in recipes:
                raise ValueError(
                    f"algorithm.{option} applies to {', '.join(recipes)}, not {self.name}"
                )
        if self.name in OWN_AVERAGING and self.aggregator.kind != "mean":
            raise ValueError(
                f"{self.name} brings its own averaging; aggregator {self.aggregator.kind!r} "
                "cannot replace it (use fedavg or fedprox with a robust rule)"
            )
        if self.name == "fednova" and getattr(self.aggregator, "uniform", None):
            raise ValueError("fednova weights clients by their examples; uniform does not apply")
        return self

    def recipe_options(self) -> dict[str, Any]:
        """Keyword arguments of the recipe: the common four and the options that are set."""
        out: dict[str, Any] = {
            "client_lr": self.client_lr,
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
        }
        if self.server_lr is not None:
            out["server_lr"] = self.server_lr
        out.update({k: getattr(self, k) for k in OPTIONS if getattr(self, k) is not None})
        if self.name == "scaffold" and getattr(self.aggregator, "uniform", None):
            out["weighted"] = False  # the paper's uniform averages of deltas and controls
        return out


class PersonalizationConfig(Section):
    """Personal models: fine-tuning (evaluation only), FedPer layers, or Ditto.

    Global and personalised accuracy are both reported every round, on the
    evaluation clients' own test splits.
    """

    kind: Literal["finetune", "fedper", "ditto"]
    layers: tuple[str, ...] = ()
    lam: float = Field(0.1, ge=0, allow_inf_nan=False)
    epochs: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _layers_for_fedper(self) -> PersonalizationConfig:
        if self.kind == "fedper" and not self.layers:
            raise ValueError(
                "personalization.layers is required for fedper: the model tensors that stay "
                "on the clients (e.g. ['fc.weight', 'fc.bias'])"
            )
        if self.kind != "fedper" and self.layers:
            raise ValueError(f"personalization.layers applies to fedper, not {self.kind}")
        return self
