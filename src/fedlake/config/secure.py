"""The ``[secure_aggregation]`` section: SecAgg+ parameters of ``federation.secure_aggregation``.

Every value has a default: the graph's degree and threshold from
:func:`fedlake.secagg.choose_parameters` for the cohort and ``expected_dropout``, the
ring's width from :func:`fedlake.secagg.required_bits`, a per-coordinate ``clip`` of 1.0
and a largest client weight ``max_weight`` of 2^16 examples.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedlake.config.section import Section

__all__ = ["SecureAggregationConfig"]


class SecureAggregationConfig(Section):
    """SecAgg+ (Bell et al., ACM CCS 2020): the graph, the ring and the encoding."""

    # k, neighbours per client (None: the smallest safe one for the cohort and dropout)
    degree: int | None = Field(None, ge=1)
    # t, shares that rebuild a secret, k / 2 < t <= k (None: the smallest safe one)
    threshold: int | None = Field(None, ge=1)
    # the dropout rate the default (k, t) must survive with probability 1 - 2^-20
    expected_dropout: float = Field(0.1, ge=0, lt=1)
    # ring width (None: the smallest of 32, 40, ... 64 bits holding 2^16 levels per clip)
    bits: Literal[16, 24, 32, 40, 48, 56, 64] | None = None
    # per-coordinate clip of the update before encoding (clipped coordinates are counted)
    clip: float = Field(1.0, gt=0, allow_inf_nan=False)
    # the largest client weight (its training examples) the ring must hold
    max_weight: float = Field(65536.0, gt=0, allow_inf_nan=False)
    # fedlake server: how long the key-exchange stages (advertise, share keys, unmask; no
    # training) wait for the clients (None: deployment.round_timeout_s, as the masked input)
    key_stage_timeout_s: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _threshold_below_degree(self) -> SecureAggregationConfig:
        k, t = self.degree, self.threshold
        if t is not None and k is None:
            raise ValueError("threshold needs degree: give both, or neither (defaults)")
        if k is not None and t is not None and not k / 2 < t <= k:
            raise ValueError(
                f"threshold must be in (degree / 2, degree] = ({k / 2:g}, {k}], got {t}"
            )
        return self
