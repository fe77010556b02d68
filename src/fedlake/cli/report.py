"""`fedlake report RUN`: summary table and metrics plot of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedlake.cli.common import fail, friendly_errors, print_table


def report(
    run: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/activity-fedavg.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the PNG (default RUN/report.png).")
    ] = None,
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Print a run's summary and write a PNG plot of its metrics per round."""
    from fedlake.lakehouse.report import plot_rounds, summary_rows
    from fedlake.orchestration.checkpoint import HISTORY, read_history
    from fedlake.run.baseline import baseline_rows, read_baseline
    from fedlake.run.experiment import REPORT_FILE

    with friendly_errors(debug):
        history = read_history(run)
        if history is None:
            fail(f"{run} is not a fedlake run folder (no {HISTORY})")
        if not history:
            fail(f"{run} has no completed round yet")
        png = plot_rounds(history, out or run / REPORT_FILE, title=run.name)
        baseline = read_baseline(run)
        extra = baseline_rows(baseline) if baseline is not None else []
        print_table(
            [*summary_rows(history), *extra, ("plot", str(png))],
            title=f"fedlake report {run.name}",
        )
