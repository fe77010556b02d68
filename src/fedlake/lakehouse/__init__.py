"""fedlake.lakehouse: Delta tables, MLflow tracking and run reports.

Importing this package is cheap: the names load eagerly;
everything that needs deltalake, pyarrow, mlflow or matplotlib loads on first
attribute access (install them with ``pip install 'fedlake[lakehouse]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fedlake.lakehouse.names import TableName

if TYPE_CHECKING:
    from fedlake.lakehouse.delta_store import CommitConflictError, DeltaStore
    from fedlake.lakehouse.mlflow_tracker import MlflowTracker
    from fedlake.lakehouse.report import plot_rounds, summary_rows
    from fedlake.lakehouse.schemas import table_schema

_LAZY = {
    "CommitConflictError": "fedlake.lakehouse.delta_store",
    "DeltaStore": "fedlake.lakehouse.delta_store",
    "MlflowTracker": "fedlake.lakehouse.mlflow_tracker",
    "plot_rounds": "fedlake.lakehouse.report",
    "summary_rows": "fedlake.lakehouse.report",
    "table_schema": "fedlake.lakehouse.schemas",
}

__all__ = [
    "CommitConflictError",
    "DeltaStore",
    "MlflowTracker",
    "TableName",
    "plot_rounds",
    "summary_rows",
    "table_schema",
]


def __getattr__(name: str) -> Any:
    """Import the heavy parts on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fedlake.lakehouse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
