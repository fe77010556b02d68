"""The seams of a federation, in one place: where clients run, where state and records go.

Implementations: executors in ``fedlake.backends`` (inline, process) and the simulation
wing's wrappers (``fedlake.simulation``); client state stores in ``fedlake.client``; the
Delta store and MLflow tracker in ``fedlake.lakehouse``; fakes and the executor
conformance suite in ``fedlake.testing``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from fedlake.client.stores import ClientStateStore
from fedlake.core.task import ClientOutcome, ClientTask

if TYPE_CHECKING:  # folding builds on records, which build on the store seam here
    from fedlake.orchestration.folding import Folded, FoldPlan

__all__ = [
    "TABLES",
    "ClientStateStore",
    "Evaluator",
    "Executor",
    "FoldingExecutor",
    "RoundReporter",
    "Snapshotable",
    "Store",
    "Tracker",
    "VariantExecutor",
]

# The four tables every run writes (names are Unity Catalog-ready: catalog.schema.<table>).
TABLES = ("models", "rounds", "client_updates", "audit")


@runtime_checkable
class Executor(Protocol):
    """Runs a round's task on a cohort of clients.

    Every client of ``cohort`` yields exactly one outcome, a reply or a typed failure
    (a client's crash is a failure, never an exception), in any order.
    """

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """One ClientReply or ClientFailure per client of ``cohort``."""
        ...

    def close(self) -> None:
        """Release workers and connections."""
        ...


@runtime_checkable
class FoldingExecutor(Protocol):
    """An executor that can also screen and fold its clients' replies where they run.

    ``folds`` says whether the round should use :meth:`fold_clients` (linear aggregators
    only): the driver then holds partial sums, never the cohort's updates.
    """

    folds: bool

    def fold_clients(self, task: ClientTask, cohort: Sequence[str], plan: FoldPlan) -> list[Folded]:
        """Partial folds of the cohort's screened replies, in a deterministic order."""
        ...


@runtime_checkable
class VariantExecutor(Protocol):
    """An executor that can run some clients as another client program.

    ``variants`` maps client ids to the name of a variant its clients know; the
    simulator's malicious clients are one (they poison their data before training).
    """

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """One outcome per client of ``cohort``, ``variants``' clients running their variant."""
        ...

    def close(self) -> None:
        """Release workers and connections."""
        ...


@runtime_checkable
class RoundReporter(Protocol):
    """An executor that reports round metrics of its own (the simulated attackers)."""

    def round_metrics(self) -> dict[str, int]:
        """Metrics of the last ``map_clients`` call, for the rounds table."""
        ...


@runtime_checkable
class Evaluator(Protocol):
    """Evaluates the global model after each round (the simulator: on clients' test splits)."""

    def prepare(self) -> str | None:
        """Get ready before the first round; a message for the user, or None."""
        ...

    def evaluate(
        self, params: np.ndarray, round_: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        """``({"loss", "accuracy", "examples"}, more round metrics)`` after round ``round_``."""
        ...


@runtime_checkable
class Snapshotable(Protocol):
    """Something whose state must be saved with every checkpoint (the simulator's stores)."""

    name: str

    def snapshot(self) -> bytes:
        """The state as bytes."""
        ...

    def restore(self, data: bytes) -> None:
        """Return to the state of ``snapshot``'s bytes."""
        ...


@runtime_checkable
class Store(Protocol):
    """Append-only tables of rows (dicts of scalars/bytes/str)."""

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows to ``table`` (created on first use)."""
        ...

    def read(self, table: str) -> list[dict[str, Any]]:
        """All rows of ``table`` (empty list when it does not exist)."""
        ...


@runtime_checkable
class Tracker(Protocol):
    """Experiment tracking (MLflow or a fake)."""

    def start(
        self, run_name: str, params: Mapping[str, Any], *, resume_id: str | None = None
    ) -> str:
        """Start (or resume) a run and log flat params; returns the run id."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step`` (the round)."""
        ...

    def log_artifact(self, path: Path) -> None:
        """Attach a file to the run."""
        ...

    def register_model(
        self, params: Any, spec_json: str, model_config: Mapping[str, Any], *, name: str, alias: str
    ) -> str:
        """Log and register the global model under ``name`` with ``alias``; returns the version."""
        ...

    def end(self, status: str = "FINISHED") -> None:
        """Close the run."""
        ...
