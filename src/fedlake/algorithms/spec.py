"""A recipe as data: the serialisable spec that travels to workers, Spark tasks and clients.

Transforms and plugins are closures and do not travel; their spec does. Every process
that runs clients builds the same :class:`~fedlake.core.algorithm.Algorithm` from it with
:func:`build_algorithm`, and a spec round-trips through JSON (:meth:`RecipeSpec.to_json`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict

from fedlake.aggregators import NEEDS_F, build_aggregator
from fedlake.algorithms.compressed import compressed
from fedlake.algorithms.personalized import personalized
from fedlake.algorithms.private import apply_dp
from fedlake.algorithms.registry import ALGORITHMS
from fedlake.config.algorithm import OWN_AVERAGING, AlgorithmConfig, PersonalizationConfig
from fedlake.config.robustness import options
from fedlake.config.run import CompressionConfig
from fedlake.core.algorithm import Algorithm
from fedlake.core.personal import Personalization
from fedlake.privacy.settings import DPSettings

__all__ = ["RecipeSpec", "aggregator_options", "build_algorithm"]


class RecipeSpec(BaseModel):
    """Everything that decides what clients and server compute, as JSON-able data.

    Args:
        algorithm: the ``[algorithm]`` section (recipe, local training, aggregator).
        compression: the ``[compression]`` section.
        attackers: the simulated attackers per round, the default of a robust rule's ``f``
            and the trimmed mean's ``trim`` (None: no attack configured).
        dp: the resolved differential privacy settings (the noise multiplier calibrated).
        personalization: the ``[personalization]`` section.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: AlgorithmConfig = AlgorithmConfig()
    compression: CompressionConfig = CompressionConfig()
    attackers: int | None = None
    dp: DPSettings | None = None
    personalization: PersonalizationConfig | None = None

    def to_json(self) -> str:
        """The spec as JSON text."""
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RecipeSpec:
        """The spec of :meth:`to_json`'s text (validated)."""
        return cls.model_validate_json(text)


def aggregator_options(algo: AlgorithmConfig, *, attackers: int | None) -> dict[str, Any]:
    """The aggregator's options, with the simulated threat model's defaults.

    With an attack configured, the defender is assumed to know an upper bound on the
    attackers per round (as the rules' guarantees do): ``f`` and the trimmed mean's
    ``trim`` (values dropped at each end) default to their number.
    """
    spec = options(algo.aggregator)
    trims = {"trim", "trim_ratio"} & set(spec)
    if spec["kind"] == "trimmed_mean" and not trims and attackers is not None:
        spec["trim"] = attackers
    if spec["kind"] in NEEDS_F and "f" not in spec:
        if attackers is None:
            raise ValueError(
                f"{spec['kind']} needs f, the number of Byzantine clients per round it must "
                "tolerate (it defaults to the simulated attackers per round when an [attack] "
                "section is given)"
            )
        spec["f"] = attackers
    return spec


def build_algorithm(spec: RecipeSpec) -> Algorithm:
    """The recipe of ``spec`` with its aggregator, personalisation, compression and DP."""
    algo = spec.algorithm
    recipe = ALGORITHMS[algo.name](**algo.recipe_options())
    if algo.name not in OWN_AVERAGING:  # scaffold and fednova bring their own averaging
        aggregator = build_aggregator(aggregator_options(algo, attackers=spec.attackers))
        recipe = dataclasses.replace(recipe, aggregator=aggregator)
    if spec.personalization is not None:
        recipe = personalized(recipe, Personalization(**spec.personalization.model_dump()))
    compression = spec.compression
    prune = compression.prune.model_dump() if compression.prune is not None else None
    recipe = compressed(
        recipe,
        upload=compression.stages("upload"),
        download=compression.stages("download"),
        error_feedback=compression.error_feedback,
        prune=prune,
    )
    return apply_dp(recipe, spec.dp) if spec.dp is not None else recipe
