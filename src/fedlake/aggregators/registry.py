"""Aggregation rules by name, for configs: ``{kind = "krum", f = 2}``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from fedlake.aggregators.bulyan import bulyan
from fedlake.aggregators.centered_clip import centered_clip
from fedlake.aggregators.geometric_median import geometric_median
from fedlake.aggregators.krum import krum, multi_krum
from fedlake.aggregators.mean import weighted_mean
from fedlake.aggregators.median import median
from fedlake.aggregators.norm_bound import norm_bound
from fedlake.aggregators.trimmed_mean import trimmed_mean
from fedlake.core.aggregator import Aggregator

AGGREGATORS: dict[str, Callable[..., Aggregator]] = {
    "mean": weighted_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "bulyan": bulyan,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "geometric_median": geometric_median,
    "centered_clip": centered_clip,
    "norm_bound": norm_bound,
}

# Rules whose guarantee is stated for at most f Byzantine clients per round.
NEEDS_F = ("krum", "multi_krum", "bulyan")


def build_aggregator(spec: Mapping[str, Any]) -> Aggregator:
    """The rule named by ``spec["kind"]`` with the rest of ``spec`` as its options.

    ``norm_bound`` may name an ``inner`` rule the same way (a mapping or a kind).
    """
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {kind!r}; accepted: {', '.join(AGGREGATORS)}")
    inner = options.pop("inner", None)
    if inner is not None:
        if kind != "norm_bound":
            raise ValueError(f"only norm_bound takes an inner rule, not {kind}")
        inner_spec = inner if isinstance(inner, Mapping) else {"kind": inner}
        options["inner"] = build_aggregator(inner_spec)
    accepted = inspect.signature(AGGREGATORS[kind]).parameters
    for option in options:
        if option not in accepted:
            names = ", ".join(accepted) or "none"
            raise ValueError(f"{kind}: unknown option {option!r}; accepted: {names}")
    for option, parameter in accepted.items():
        if parameter.default is inspect.Parameter.empty and option not in options:
            raise ValueError(f"{kind}: option {option!r} is required")
    return AGGREGATORS[kind](**options)
