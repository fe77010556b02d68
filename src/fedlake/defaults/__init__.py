"""Configs shipped with the package: ``fedlake run`` without ``--config`` runs the default one."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "default_config_text", "default_config_path"]

DEFAULT_CONFIG = "activity_fedavg.toml"  # also examples/activity_fedavg.toml (kept identical)


def default_config_text() -> str:
    """The default federation's config (cross-device activity recognition) as TOML text."""
    return files(__name__).joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def default_config_path() -> Path:
    """A filesystem path to the default config (the packaged file itself when installed as files).

    Zip or other non-file installs get a copy that lives as long as the process.
    """
    resource = files(__name__).joinpath(DEFAULT_CONFIG)
    if isinstance(resource, Path):
        return resource
    manager = as_file(resource)
    path = manager.__enter__()  # deliberately kept open: the copy must outlive this call
    return Path(path)
