"""Doctor checks of ``algorithm.aggregator``: robust rules under secure aggregation, and
Krum-family rules whose ``f`` the cohort cannot carry (each rule's own ``min_updates``)."""

from __future__ import annotations

import math
from typing import Any

from fedlake.aggregators import NEEDS_F, build_aggregator
from fedlake.algorithms.spec import aggregator_options
from fedlake.config import RunConfig
from fedlake.config.algorithm import OWN_AVERAGING
from fedlake.core.aggregator import Aggregator
from fedlake.doctor.facts import Facts
from fedlake.doctor.finding import Finding
from fedlake.orchestration.secure import LINEAR_MEANS


def resolved_spec(cfg: RunConfig, facts: Facts) -> dict[str, Any]:
    """The aggregator's options as the run resolves them (``f`` from ``[attack]``)."""
    return aggregator_options(cfg.algorithm, attackers=facts.attackers)


def largest_f(spec: dict[str, Any], cohort: int) -> int | None:
    """The largest ``f`` whose rule, built by the library, accepts ``cohort`` updates."""
    for f in range(cohort, -1, -1):
        try:
            if build_aggregator({**spec, "f": f}).min_updates <= cohort:
                return f
        except ValueError:  # an m the cohort cannot hold whatever f is
            return None
    return None


def check_aggregation(cfg: RunConfig, facts: Facts) -> list[Finding]:
    """Findings about the aggregation rule of ``cfg``."""
    if cfg.algorithm.name in OWN_AVERAGING:
        return []
    kind = cfg.algorithm.aggregator.kind
    try:
        spec = resolved_spec(cfg, facts)
        rule = build_aggregator(spec)
    except ValueError as exc:
        fix = "set algorithm.aggregator.f" if kind in NEEDS_F else "fix algorithm.aggregator"
        return [Finding("error", "aggregator.options", f"{kind}: {exc}", fix)]
    findings = _secure(cfg, rule)
    if facts.cohort is not None:
        findings += _cohort(cfg, spec, rule, facts.cohort)
    return findings


def _secure(cfg: RunConfig, rule: Aggregator) -> list[Finding]:
    """A rule that needs each update, where secure aggregation shows only their sum."""
    if not cfg.federation.secure_aggregation or rule.name in LINEAR_MEANS:
        return []
    kind = "non-linear" if not rule.linear else "per-update"
    return [
        Finding(
            "error",
            "secure.robust",
            f"aggregator {rule.name!r} ({kind}) with federation.secure_aggregation = true: "
            "secure aggregation reveals only the sum of the updates, so the server cannot "
            "pick, trim or clip individual ones (the run refuses it)",
            "use algorithm.aggregator = {kind = 'mean'} with secure aggregation, or set "
            "federation.secure_aggregation = false to keep the robust rule",
        )
    ]


def _cohort(cfg: RunConfig, spec: dict[str, Any], rule: Aggregator, cohort: int) -> list[Finding]:
    """A rule that needs more updates a round than the cohort (or its survivors) gives."""
    needed = rule.min_updates
    dropout = cfg.federation.dropout
    expected = cohort * (1 - dropout)
    if needed <= expected:
        return []
    f = spec.get("f")
    with_f = f" with f = {f}" if f is not None else ""
    why = f"{rule.name}{with_f} needs at least {needed} updates a round"
    fix = f"sample at least {math.ceil(needed / (1 - dropout))} clients per round"
    if rule.name in NEEDS_F:
        best = largest_f(spec, math.floor(expected))
        if best is not None:
            fix += f", or lower f to {best} (the most this cohort tolerates)"
    if needed > cohort:
        return [
            Finding(
                "error",
                "aggregator.cohort",
                f"{why}, but a round samples {cohort} clients: every round would fail",
                fix,
            )
        ]
    return [
        Finding(
            "warning",
            "aggregator.cohort",
            f"{why}; a round samples {cohort} clients, and with dropout {dropout:g} "
            f"{expected:.3g} reply on average: many rounds will fail and be retried",
            fix,
        )
    ]
