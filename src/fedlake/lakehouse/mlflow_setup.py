"""Importing MLflow: with usage telemetry off, or with an ImportError naming the extra to install.

Shared by the tracker and the pyfunc model (both need ``mlflow`` imported this way).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["INSTALL_HINT", "TELEMETRY_OFF", "disable_telemetry", "import_mlflow"]

INSTALL_HINT = "pip install 'fedlake[lakehouse]'"
# Env vars MLflow 3.x reads to opt out of usage telemetry (checked at import and per event).
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def disable_telemetry() -> None:
    """Opt out of MLflow usage telemetry (set before ``import mlflow``; explicit choices win)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def import_mlflow() -> Any:
    """Import ``mlflow`` with telemetry off, or raise ImportError with the install command."""
    disable_telemetry()
    try:
        import mlflow
    except ImportError as err:
        raise ImportError(f"MLflow tracking needs mlflow: {INSTALL_HINT}") from err
    return mlflow
