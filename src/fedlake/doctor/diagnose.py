"""``diagnose``: every doctor check over a config, most severe findings first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedlake.config import ConfigError, RunConfig, load_config
from fedlake.doctor.aggregation import check_aggregation
from fedlake.doctor.compression import check_compression
from fedlake.doctor.evaluation import check_evaluation, check_holdout, check_secure
from fedlake.doctor.facts import Facts, facts_of
from fedlake.doctor.finding import Finding, ordered
from fedlake.doctor.privacy import check_privacy
from fedlake.run.build import config_section

Check = Callable[[RunConfig, Facts], list[Finding]]
CHECKS: tuple[Check, ...] = (
    check_privacy,
    check_aggregation,
    check_secure,
    check_evaluation,
    check_holdout,
    check_compression,
)


def diagnose(cfg: RunConfig) -> list[Finding]:
    """The findings of every check over ``cfg``, most severe first."""
    try:
        with config_section("data"):  # the data and model the run would build
            facts = facts_of(cfg)
    except (ConfigError, ImportError) as exc:
        return [Finding("error", "config.build", str(exc), "fix the section it names")]
    return ordered([f for check in CHECKS for f in check(cfg, facts)])


def diagnose_file(path: str | Path) -> list[Finding]:
    """The findings of the config file at ``path``; one that does not load is one error."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return [Finding("error", "config.load", str(exc), "fix the config file as it says")]
    return diagnose(cfg)
