"""`fedlake run`: run a federation from a config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fedlake.cli.common import apply_overrides, friendly_errors, print_table
from fedlake.config import parse_config, read_raw


def run(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Run config (TOML or YAML); see examples/. Default: the packaged "
            "cross-device activity federation (examples/activity_fedavg.toml), from any folder.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in output_dir/name from its last completed round, "
            "also after it finished: raise --rounds or the target to train on. The config "
            "must be the same except federation.rounds/target_accuracy and executor.",
        ),
    ] = False,
    rounds: Annotated[int | None, typer.Option(help="Override federation.rounds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the run seed.")] = None,
    name: Annotated[str | None, typer.Option(help="Override the run name (its folder).")] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Override output_dir (default: runs).")
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="Override executor.kind: inline or process.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Override executor.workers (process executor).")
    ] = None,
    mlflow: Annotated[
        bool | None, typer.Option("--mlflow/--no-mlflow", help="Track the run in MLflow.")
    ] = None,
    delta: Annotated[
        bool | None, typer.Option("--delta/--no-delta", help="Write the Delta tables.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress output; warnings still go to stderr.")
    ] = False,
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Run a federation: sample clients, train locally, aggregate, evaluate, record.

    Every round is checkpointed; a stopped or killed run continues with --resume.
    Results go to output_dir/name: MLflow (SQLite), Delta tables, history.json and
    report.png.
    """
    with friendly_errors(debug):
        if config is None:
            from fedlake.defaults import default_config

            given = default_config()
        else:
            given = read_raw(config)
        raw = apply_overrides(
            given,
            {
                "federation.rounds": rounds,
                "seed": seed,
                "name": name,
                "output_dir": str(output_dir) if output_dir else None,
                "executor.kind": executor,
                "executor.workers": workers,
                "lakehouse.mlflow": mlflow,
                "lakehouse.delta": delta,
            },
        )
        cfg = parse_config(raw)
        _run(cfg, resume=resume, quiet=quiet)


def _run(cfg: Any, *, resume: bool, quiet: bool) -> None:
    # MLflow logs INFO lines (database migrations, signature checks) that would tear the
    # progress bars; the CLI shows warnings only unless the user asked for more.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from fedlake.cli.progress import QuietObserver, RichObserver
    from fedlake.lakehouse.report import summary_rows
    from fedlake.run.baseline import baseline_rows
    from fedlake.run.experiment import run_experiment

    if quiet:
        outcome = run_experiment(cfg, resume=resume, observer=QuietObserver())
    else:
        with RichObserver() as obs:
            outcome = run_experiment(cfg, resume=resume, observer=obs)
    res = outcome.result
    rows = [("stop reason", res.stop_reason), *summary_rows(res.history)]
    if outcome.baseline is not None:
        rows += baseline_rows(outcome.baseline)
    if outcome.archived is not None:
        rows.append(("previous run moved to", str(outcome.archived)))
    rows.append(("run folder", str(outcome.run_dir)))
    if outcome.tracking_uri:
        rows.append(("MLflow", f"{outcome.tracking_uri}  run {outcome.tracker_run_id}"))
        rows.append(("  browse with", f"mlflow ui --backend-store-uri {outcome.tracking_uri}"))
    if outcome.model_version:
        rows.append(
            (
                "registered model",
                f"models:/{cfg.lakehouse.model_name}@{cfg.lakehouse.alias} "
                f"(version {outcome.model_version}, "
                + (  # DP runs register the last model (see runner.run_experiment)
                    f"round {res.state.round}, the last: DP)"
                    if cfg.privacy is not None
                    else f"round {res.best_round})"
                ),
            )
        )
    if outcome.lakehouse_root:
        base = f"{cfg.lakehouse.catalog}.{cfg.lakehouse.schema_}"
        rows.append(("Delta tables", f"{base}.{{models,rounds,client_updates,audit}}"))
        rows.append(("  stored under", str(outcome.lakehouse_root)))
    if outcome.report_path:
        rows.append(("report plot", str(outcome.report_path)))
    print_table(rows, title=f"fedlake run {cfg.name}")
    if res.stop_reason == "insufficient_updates":
        raise typer.Exit(1)
