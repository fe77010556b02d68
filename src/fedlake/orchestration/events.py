"""Run events: how the orchestrator tells a console (or a test) what happens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class RunObserver(Protocol):
    """Receives progress events; the CLI renders them with rich."""

    def run_started(self, *, total_rounds: int, start_round: int, resumed: bool) -> None:
        """The run begins (or resumes) at ``start_round``."""
        ...

    def round_started(self, *, round: int, attempt: int, cohort_size: int) -> None:
        """A round (or a retry of it) starts with ``cohort_size`` sampled clients."""
        ...

    def client_finished(self, *, round: int, done: int, total: int) -> None:
        """One more client of the round has reported (or failed)."""
        ...

    def round_finished(self, record: Mapping[str, Any]) -> None:
        """A round ended; ``record`` is its row of the rounds table plus extras."""
        ...

    def message(self, text: str) -> None:
        """Something the user should read (a retry, a stop reason)."""
        ...


class NullObserver:
    """Observer that remembers messages and records (tests, quiet runs)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.records: list[dict[str, Any]] = []

    def run_started(self, *, total_rounds: int, start_round: int, resumed: bool) -> None:
        """Ignore."""

    def round_started(self, *, round: int, attempt: int, cohort_size: int) -> None:
        """Ignore."""

    def client_finished(self, *, round: int, done: int, total: int) -> None:
        """Ignore."""

    def round_finished(self, record: Mapping[str, Any]) -> None:
        """Remember the record."""
        self.records.append(dict(record))

    def message(self, text: str) -> None:
        """Remember the message."""
        self.messages.append(text)
