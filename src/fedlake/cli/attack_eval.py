"""`fedlake attack-eval`: which defence holds against which attack, on a scenario."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedlake.cli.common import apply_overrides, friendly_errors, print_table
from fedlake.config import read_raw


def attack_eval(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="A run config with an [attack_eval] section (the grid); see "
            "examples/digits_attack_eval.toml.",
        ),
    ],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Keep the cells a stopped or killed grid already ran; run the rest."
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Cells run in parallel (default: the number of cores)."),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Override federation.rounds in every cell.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the run seed.")] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Override output_dir (default: runs).")
    ] = None,
    mlflow: Annotated[
        bool | None,
        typer.Option("--mlflow/--no-mlflow", help="Log the grid's tables to MLflow."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Run every attack x defence x malicious fraction of the config's grid.

    Each cell is a whole federation on the config's scenario. Writes results.md and
    results.csv (final clean accuracy; backdoor success rate for backdoors), heatmap.png
    and results.jsonl (cells as they finish, for --resume) to
    output_dir/<name>-attack-eval, and logs them to one MLflow run.
    """
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from fedlake.harness import run_grid

    with friendly_errors(debug):
        raw = apply_overrides(
            read_raw(config),
            {
                "seed": seed,
                "federation.rounds": rounds,
                "output_dir": str(output_dir) if output_dir else None,
                "lakehouse.mlflow": mlflow,
            },
        )
        console = Console()
        progress = Progress(
            TextColumn("[bold]cells"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet or not console.is_terminal,
        )
        task = progress.add_task("cells", total=None, last="")
        plain = not quiet and not console.is_terminal

        def started(todo: int, done: int) -> None:
            progress.update(task, total=todo + done, completed=done)
            if not quiet:
                console.print(f"{todo} cells to run, {done} already done", highlight=False)

        def finished(row: Mapping[str, Any]) -> None:
            line = _cell_line(row)
            progress.update(task, advance=1, last=line)
            if plain:
                console.print(line, highlight=False, soft_wrap=True)

        with progress:
            outcome = run_grid(
                raw,
                resume=resume,
                workers=workers,
                on_start=started,
                on_cell=finished,
            )
        if not quiet:
            console.print(outcome.markdown_path.read_text(), highlight=False, soft_wrap=True)
        rows = [
            ("cells", str(len(outcome.rows))),
            ("tables", f"{outcome.markdown_path}  {outcome.csv_path}"),
            ("heat map", str(outcome.heatmap_path)),
        ]
        if outcome.archived is not None:
            rows.append(("previous results moved to", str(outcome.archived)))
        if outcome.tracking_uri:
            rows.append(("MLflow", f"{outcome.tracking_uri}  run {outcome.tracker_run_id}"))
        print_table(rows, title="fedlake attack-eval")


def _cell_line(row: Mapping[str, Any]) -> str:
    """``sign_flip 20% krum: acc 0.912`` (or n/a, or the backdoor success too)."""
    head = f"{row['attack']} {100 * row['fraction']:g}% {row['defence']}:"
    if row.get("status") == "n/a":
        return f"{head} n/a"
    acc = row.get("final_accuracy")
    text = f"{head} acc {acc:.3f}" if acc is not None else f"{head} failed"
    if row.get("backdoor_success") is not None:
        text += f"  backdoor {row['backdoor_success']:.2f}"
    return text
