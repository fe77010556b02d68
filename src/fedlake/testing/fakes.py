"""In-memory fakes of the seams, for tests (ours and yours): a table store and a tracker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MemoryStore", "NullTracker"]


class MemoryStore:
    """In-memory Store for tests."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append copies of ``rows``."""
        self.tables.setdefault(table, []).extend(dict(r) for r in rows)

    def read(self, table: str) -> list[dict[str, Any]]:
        """Rows of ``table``."""
        return list(self.tables.get(table, []))


class NullTracker:
    """Tracker that records calls in memory (tests, or tracking turned off)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[Path] = []
        self.registered: list[tuple[str, str]] = []
        self.status: str | None = None

    def start(
        self, run_name: str, params: Mapping[str, Any], *, resume_id: str | None = None
    ) -> str:
        """Remember params; returns a fixed id."""
        self.params.update(params)
        return resume_id or "null-run"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Remember metrics."""
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: Path) -> None:
        """Remember the path."""
        self.artifacts.append(Path(path))

    def register_model(
        self, params: Any, spec_json: str, model_config: Mapping[str, Any], *, name: str, alias: str
    ) -> str:
        """Remember the registration."""
        self.registered.append((name, alias))
        return str(len(self.registered))

    def end(self, status: str = "FINISHED") -> None:
        """Remember the final status."""
        self.status = status
