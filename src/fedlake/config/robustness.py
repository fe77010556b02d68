"""Config sections of robust aggregation, simulated attacks and the attack harness.

Ranges are checked by the library when the rule or attack is built (one source of
truth; the message names the value and the accepted range); these models check keys
and types. Options left out take the library's defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from fedlake.config.section import Section


class MeanRule(Section):
    """Weighted (by examples) or uniform mean: FedAvg's rule, not robust."""

    kind: Literal["mean"]
    uniform: bool | None = None


class KrumRule(Section):
    """Krum / Multi-Krum (Blanchard et al., 2017); f defaults to the simulated attackers."""

    kind: Literal["krum"]
    f: int | None = None


class MultiKrumRule(Section):
    """Multi-Krum: mean of the m best Krum scores (default m = n - f)."""

    kind: Literal["multi_krum"]
    f: int | None = None
    m: int | None = None


class BulyanRule(Section):
    """Bulyan (El Mhamdi et al., 2018); needs n >= 4f + 3."""

    kind: Literal["bulyan"]
    f: int | None = None


class MedianRule(Section):
    """Coordinate-wise median (Yin et al., 2018)."""

    kind: Literal["median"]


class TrimmedMeanRule(Section):
    """Coordinate-wise trimmed mean (Yin et al., 2018): a share or a count at each end."""

    kind: Literal["trimmed_mean"]
    trim_ratio: float | None = None
    trim: int | None = None


class GeometricMedianRule(Section):
    """Geometric median, smoothed Weiszfeld (RFA, Pillutla et al., 2022)."""

    kind: Literal["geometric_median"]
    max_iter: int | None = None
    nu: float | None = None
    ftol: float | None = None


class CenteredClipRule(Section):
    """Centered clipping (Karimireddy et al., 2021); tau omitted = median distance."""

    kind: Literal["centered_clip"]
    tau: float | None = None
    iterations: int | None = None


class NormBoundRule(Section):
    """Clip every update to max_norm (omitted = the round's median norm), then ``inner``."""

    kind: Literal["norm_bound"]
    max_norm: float | None = None
    inner: Literal["mean", "median", "trimmed_mean", "geometric_median", "centered_clip"] | None = (
        None
    )


AggregatorConfig = Annotated[
    MeanRule
    | KrumRule
    | MultiKrumRule
    | BulyanRule
    | MedianRule
    | TrimmedMeanRule
    | GeometricMedianRule
    | CenteredClipRule
    | NormBoundRule,
    Field(discriminator="kind"),
]


class AttackSection(Section):
    """Common to every attack: the share of each round's cohort that is malicious."""

    fraction: float | None = None


class NoAttack(AttackSection):
    """Every client is honest (the harness's baseline)."""

    kind: Literal["none"]


class LabelFlipAttack(AttackSection):
    """Malicious clients train on labels y -> C - 1 - y."""

    kind: Literal["label_flip"]


class SignFlipAttack(AttackSection):
    """Malicious clients send -scale times their delta."""

    kind: Literal["sign_flip"]
    scale: float | None = None


class GaussianAttack(AttackSection):
    """Malicious clients send N(0, sigma^2) noise."""

    kind: Literal["gaussian"]
    sigma: float | None = None


class BackdoorAttack(AttackSection):
    """Scaled model replacement with a trigger (Bagdasaryan et al., 2020)."""

    kind: Literal["backdoor"]
    target: int | None = None
    poison_fraction: float | None = None
    boost: float | None = None
    trigger_size: int | None = None
    trigger_value: float | None = None


class AlieAttack(AttackSection):
    """A Little Is Enough (Baruch et al., 2019): mean - z std of the honest deltas."""

    kind: Literal["alie"]
    z: float | None = None


class IpmAttack(AttackSection):
    """Inner-product manipulation (Xie et al., 2019): -epsilon times the honest mean."""

    kind: Literal["ipm"]
    epsilon: float | None = None


AttackConfig = Annotated[
    NoAttack
    | LabelFlipAttack
    | SignFlipAttack
    | GaussianAttack
    | BackdoorAttack
    | AlieAttack
    | IpmAttack,
    Field(discriminator="kind"),
]


def options(section: Section) -> dict[str, Any]:
    """The options a user set (and the kind), for the library's factories."""
    return {"kind": section.kind, **section.model_dump(exclude_unset=True, exclude_none=True)}  # type: ignore[attr-defined]


def _kinds(value: Any) -> Any:
    """Let a grid list name plain kinds: ``"krum"`` means ``{kind = "krum"}``."""
    if isinstance(value, list | tuple):
        return [{"kind": v} if isinstance(v, str) else v for v in value]
    return value


DEFAULT_ATTACKS = ("none", "sign_flip", "gaussian", "label_flip", "backdoor", "alie", "ipm")
DEFAULT_DEFENCES = (
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geometric_median",
    "centered_clip",
    "norm_bound",
)


class AttackEvalConfig(Section):
    """The grid of ``fedlake attack-eval``: every attack x defence x malicious fraction."""

    attacks: tuple[AttackConfig, ...] = Field(DEFAULT_ATTACKS, validate_default=True, min_length=1)
    defences: tuple[AggregatorConfig, ...] = Field(
        DEFAULT_DEFENCES, validate_default=True, min_length=1
    )
    fractions: tuple[float, ...] = (0.1, 0.2)
    workers: int | None = Field(None, ge=1, le=64)

    _named_attacks = field_validator("attacks", mode="before")(_kinds)
    _named_defences = field_validator("defences", mode="before")(_kinds)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        bad = [f for f in value if not 0 < f < 1]
        if bad or not value:
            raise ValueError("fractions must be a non-empty list of numbers in (0, 1)")
        return tuple(sorted(set(value)))
