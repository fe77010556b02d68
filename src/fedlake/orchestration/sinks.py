"""Where a run's records go: Delta tables (Store) and MLflow (Tracker)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fedlake.orchestration.interfaces import Store, Tracker

METRICS_KEY = "_tracker_metrics"  # pending entry that goes to the tracker, not to a table


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


@dataclass
class RunSinks:
    """Fan-out of a run's rows to the store and metrics to the tracker (either may be None)."""

    run_id: str
    store: Store | None = None
    tracker: Tracker | None = None

    def audit_row(self, action: str, obj: str, details: Mapping[str, Any]) -> dict[str, Any]:
        """One audit-log row by the orchestrator."""
        return {
            "time": now(),
            "run_id": self.run_id,
            "actor": "fedlake.orchestrator",
            "action": action,
            "object": obj,
            "details": json.dumps(dict(details), default=str, sort_keys=True),
        }

    def flush(self, pending: Mapping[str, list[dict[str, Any]]], *, replay: bool = False) -> None:
        """Write pending rows.

        ``replay`` marks rows saved by a run that was killed before writing them: those
        already in the rounds table are not written twice. Only a replay reads the table
        back, so a normal round costs appends only.
        """
        if self.store is not None:
            rounds = pending.get("rounds", [])
            if replay and rounds and self._already_written(rounds):
                pending = {k: v for k, v in pending.items() if k == METRICS_KEY}
            for table, rows in pending.items():
                if table != METRICS_KEY and rows:
                    self.store.append(table, [{"run_id": self.run_id, **r} for r in rows])
        if self.tracker is not None:
            for entry in pending.get(METRICS_KEY, []):
                step = int(entry["step"])
                clean = {
                    k: float(v)
                    for k, v in entry.items()
                    if k != "step" and v is not None and math.isfinite(float(v))
                }
                self.tracker.log_metrics(clean, step=step)

    def _already_written(self, rounds: list[dict[str, Any]]) -> bool:
        assert self.store is not None
        keys = {(r["round"], r["attempt"]) for r in rounds}
        existing = {
            (r["round"], r["attempt"])
            for r in self.store.read("rounds")
            if r.get("run_id") == self.run_id
        }
        return keys <= existing
