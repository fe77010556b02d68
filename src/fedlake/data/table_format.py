"""What the table reader and writer share: the formats, where the feature shape is stored, imports.

deltalake and pyarrow are optional extras: :func:`_import` names the extra to install.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INSTALL_HINT", "TABLE_FORMATS"]

TABLE_FORMATS = ("delta", "parquet", "csv")
INSTALL_HINT = "pip install 'fedlake[lakehouse]'"
_SHAPE_KEY = "fedlake.feature_shape"
_SIDECAR = "_fedlake.json"  # csv only; pyarrow skips files starting with "_"


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"client tables need {name.split('.')[0]}: {INSTALL_HINT}") from err


def _check_format(format: str) -> None:
    if format not in TABLE_FORMATS:
        raise ValueError(f"unknown table format {format!r}; accepted: {', '.join(TABLE_FORMATS)}")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")
