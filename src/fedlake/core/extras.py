"""Optional dependencies: imported where they are used, with an actionable message if missing.

A client install (``pip install fedlake``) is numpy and pydantic; the server's and the
simulator's packages are extras (``sim``, ``cli``, ``crypto``, ``torch``, ``lakehouse``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise ImportError saying which extra installs it and why."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ImportError(
            f"{purpose} needs the optional package {package!r}, which is not installed: "
            f"pip install 'fedlake[{extra}]'"
        ) from exc
