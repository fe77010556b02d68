"""Rich rendering of run events: a progress bar per round with live loss/accuracy.

On a terminal: a rounds bar (with the last round's accuracy and loss) and a bar
for the clients of the current round, laid out to fit 80 columns. Elsewhere
(CI logs, Databricks job output, ``| tee``) live bars cannot redraw, so one
plain line is printed per round instead.
"""

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
)

from fedlake.orchestration.events import NullObserver

BAR_WIDTH = 16


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def round_stats(record: Mapping[str, Any]) -> str:
    """``acc 0.871  loss 0.401  13/15 ok``: a round's live metrics in one short line."""
    line = f"acc {_fmt(record.get('eval_accuracy'), '.3f')}  "
    personal = record.get("personal_accuracy")
    if isinstance(personal, int | float):  # personalised runs: each client's own model
        line += f"personal {personal:.3f}  "
    line += (
        f"loss {_fmt(record.get('eval_loss'), '.3f')}  "
        f"{record.get('num_completed')}/{record.get('num_sampled')} ok"
    )
    late = record.get("num_stragglers")
    if isinstance(late, int | float) and late:
        line += f"  {int(late)} late"
    ratio = record.get("upload_ratio")
    if isinstance(ratio, int | float) and ratio >= 1.5:  # only when uploads are compressed
        line += f"  up 1/{ratio:.0f}"
    eps = record.get("epsilon")
    if isinstance(eps, int | float):  # DP runs: the privacy spent so far
        line += f"  \u03b5 {eps:.2f}"
    return line


class RichObserver:
    """Rounds bar plus clients bar on a terminal; one line per round otherwise."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=BAR_WIDTH),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            disable=not self.live,
        )
        self._rounds: Any = None
        self._clients: Any = None
        self._total = 0

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._clients is not None:  # the finished run keeps only its rounds bar
            self.progress.remove_task(self._clients)
            self._clients = None
        self.progress.stop()

    def run_started(self, *, total_rounds: int, start_round: int, resumed: bool) -> None:
        """Create the rounds bar."""
        self._total = total_rounds
        label = "resumed" if resumed else "rounds"
        self._rounds = self.progress.add_task(
            label, total=total_rounds, completed=start_round, stats=""
        )
        if not self.live:
            verb = "resuming at" if resumed else "starting"
            self.console.print(f"{verb} round {start_round + 1} of at most {total_rounds}")

    def round_started(self, *, round: int, attempt: int, cohort_size: int) -> None:
        """(Re)create the clients bar of this round."""
        if self._clients is not None:
            self.progress.remove_task(self._clients)
        tag = f" (retry {attempt})" if attempt else ""
        self._clients = self.progress.add_task(f"  clients{tag}", total=cohort_size, stats="")

    def client_finished(self, *, round: int, done: int, total: int) -> None:
        """Advance the clients bar."""
        if self._clients is not None:
            self.progress.update(self._clients, completed=done, total=total)

    def round_finished(self, record: Mapping[str, Any]) -> None:
        """Advance the rounds bar and show the round's live metrics."""
        stats = round_stats(record)
        if self._rounds is not None:
            self.progress.update(self._rounds, advance=1, stats=stats)
        if not self.live:
            seconds = _fmt(record.get("duration_s"), ".2f")
            self.console.print(
                f"round {record.get('round')}/{self._total}  {stats}  {seconds} s", highlight=False
            )

    def message(self, text: str) -> None:
        """Print a line above the bars."""
        self.console.print(f"[yellow]{text}", highlight=False)


class QuietObserver(NullObserver):
    """``--quiet``: no progress at all, but warnings and the stop reason still go to stderr."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)

    def message(self, text: str) -> None:
        """Print the message."""
        super().message(text)
        self.console.print(f"[yellow]{text}", highlight=False)
