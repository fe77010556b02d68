"""Rich rendering of run events: a progress bar per round with live loss/accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class RichObserver:
    """Overall rounds bar plus one bar for the clients of the current round."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._rounds: Any = None
        self._clients: Any = None
        self._stats = ""

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_started(self, *, total_rounds: int, start_round: int, resumed: bool) -> None:
        """Create the rounds bar."""
        label = "resumed" if resumed else "rounds"
        self._rounds = self.progress.add_task(
            label, total=total_rounds, completed=start_round, stats=""
        )

    def round_started(self, *, round: int, attempt: int, cohort_size: int) -> None:
        """(Re)create the clients bar of this round."""
        if self._clients is not None:
            self.progress.remove_task(self._clients)
        tag = f" (retry {attempt})" if attempt else ""
        self._clients = self.progress.add_task(
            f"  round {round}{tag} clients", total=cohort_size, stats=""
        )

    def client_finished(self, *, round: int, done: int, total: int) -> None:
        """Advance the clients bar."""
        if self._clients is not None:
            self.progress.update(self._clients, completed=done, total=total)

    def round_finished(self, record: Mapping[str, Any]) -> None:
        """Advance the rounds bar and show the round's live metrics."""
        stats = (
            f"acc {_fmt(record.get('eval_accuracy'), '.3f')}  "
            f"loss {_fmt(record.get('eval_loss'), '.3f')}  "
            f"train {_fmt(record.get('train_loss'), '.3f')}  "
            f"clients {record.get('num_completed')}/{record.get('num_sampled')}"
        )
        if self._rounds is not None:
            self.progress.update(self._rounds, advance=1, stats=stats)

    def message(self, text: str) -> None:
        """Print a line above the bars."""
        self.progress.console.print(f"[yellow]{text}")
