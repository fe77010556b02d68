"""Configs shipped with the package: ``fedlake run`` without ``--config`` runs the default one."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from typing import Any

__all__ = ["DEFAULT_CONFIG", "default_config", "default_config_text"]

DEFAULT_CONFIG = "activity_fedavg.toml"  # also examples/activity_fedavg.toml (kept identical)


def default_config_text() -> str:
    """The default federation's config (cross-device activity recognition) as TOML text."""
    return files(__name__).joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def default_config() -> dict[str, Any]:
    """The default federation's config as a raw mapping (not yet validated)."""
    return tomllib.loads(default_config_text())
