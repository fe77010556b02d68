"""The ``[fedbuff]`` section: asynchronous buffered aggregation for a deployed federation.

With it, ``fedlake server`` takes one server step every ``buffer`` (K) arrivals instead
of synchronous rounds: up to ``concurrency`` clients train at once, each on the version
it pulled, and ``federation.rounds`` counts server steps.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from fedlake.config.section import Section
from fedlake.core.staleness import staleness_weight


class FedBuffConfig(Section):
    """FedBuff (Nguyen et al., AISTATS 2022): concurrency, K, max staleness, the weight."""

    concurrency: int = Field(100, ge=1)  # clients training at once
    buffer: int = Field(10, ge=1)  # K: updates per server step
    max_staleness: int | None = Field(None, ge=0)  # older updates are dropped
    staleness: str = "sqrt"  # 1/sqrt(1+tau); "none"; "poly:a": (1+tau)^-a

    @field_validator("staleness")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        staleness_weight(rule, 0)
        return rule

    @model_validator(mode="after")
    def _buffer_fits(self) -> FedBuffConfig:
        if self.buffer > self.concurrency:
            raise ValueError(
                f"buffer ({self.buffer}) > concurrency ({self.concurrency}): a step would "
                "wait for more clients than ever train at once"
            )
        return self
