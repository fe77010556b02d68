"""Run an experiment from a config: build everything, run the federation, record the results."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedlake.config import ResumeError, RunConfig, parse_config
from fedlake.orchestration.checkpoint import CHECKPOINT, HISTORY
from fedlake.orchestration.events import NullObserver, RunObserver
from fedlake.orchestration.outcome import RunResult
from fedlake.orchestration.sinks import RunSinks
from fedlake.run.baseline import PooledBaseline, pooled_baseline
from fedlake.run.build import Experiment, build_experiment, run_dir_of

CONFIG_FILE = "config.json"
REPORT_FILE = "report.png"
# Keys that may change when a run is resumed: extend it, aim higher, or run it elsewhere
# (results do not depend on the executor).
RESUMABLE_CHANGES = {
    ("federation", "rounds"),
    ("federation", "target_accuracy"),
    ("executor", "kind"),
    ("executor", "workers"),
}


@dataclass
class RunOutcome:
    """What a finished (or paused) run produced and where."""

    result: RunResult
    run_dir: Path
    history_path: Path
    report_path: Path | None
    tracking_uri: str | None
    tracker_run_id: str | None
    model_version: str | None
    lakehouse_root: Path | None
    archived: Path | None
    baseline: PooledBaseline | None = None


def prepare_run_dir(cfg: RunConfig, *, resume: bool) -> tuple[Path, Path | None]:
    """Create the run folder; a fresh run moves an old one aside (never deletes it)."""
    run_dir = run_dir_of(cfg)
    archived = None
    if resume:
        saved = run_dir / CONFIG_FILE
        if not saved.exists():
            raise ResumeError(f"nothing to resume: {run_dir} holds no run (no {CONFIG_FILE})")
        if not (run_dir / CHECKPOINT).exists():
            raise ResumeError(
                f"nothing to resume: {run_dir} has no completed round yet; "
                "start it again without --resume"
            )
        _check_resumable(parse_config(json.loads(saved.read_text())), cfg)
    elif run_dir.exists() and any(run_dir.iterdir()):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        archived = run_dir.with_name(f"{run_dir.name}-{stamp}")
        shutil.move(str(run_dir), str(archived))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(cfg.model_dump_json(by_alias=True, indent=2))
    return run_dir, archived


def _check_resumable(saved: RunConfig, new: RunConfig) -> None:
    a, b = saved.model_dump(by_alias=True), new.model_dump(by_alias=True)
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section), b.get(section)
        if isinstance(sa, dict) and isinstance(sb, dict):
            for key in sorted(set(sa) | set(sb)):
                if sa.get(key) != sb.get(key) and (section, key) not in RESUMABLE_CHANGES:
                    allowed = ", ".join(f"{s}.{k}" for s, k in sorted(RESUMABLE_CHANGES))
                    raise ResumeError(
                        f"{section}.{key} differs from the run being resumed "
                        f"({sa.get(key)!r} -> {sb.get(key)!r}); only {allowed} may change"
                    )
        elif sa != sb:
            raise ResumeError(f"{section} differs from the run being resumed ({sa!r} -> {sb!r})")


def make_sinks(cfg: RunConfig, run_dir: Path) -> tuple[RunSinks, Path | None]:
    """Delta store and MLflow tracker as configured (embedded defaults under the run folder)."""
    sinks = RunSinks(run_id="")
    root = None
    if cfg.lakehouse.delta:
        from fedlake.lakehouse.delta_store import DeltaStore

        root = Path(cfg.lakehouse.root) if cfg.lakehouse.root else run_dir / "lakehouse"
        sinks.store = DeltaStore(root, catalog=cfg.lakehouse.catalog, schema=cfg.lakehouse.schema_)
    if cfg.lakehouse.mlflow:
        from fedlake.lakehouse.mlflow_tracker import MlflowTracker

        sinks.tracker = MlflowTracker(
            run_dir,
            tracking_uri=cfg.lakehouse.tracking_uri,
            registry_uri=cfg.lakehouse.registry_uri,
            experiment=cfg.lakehouse.experiment,
        )
    return sinks, root


def run_experiment(
    cfg: RunConfig,
    *,
    resume: bool = False,
    observer: RunObserver | None = None,
    stop_after: int | None = None,
    build: Callable[..., Experiment] = build_experiment,
) -> RunOutcome:
    """Run ``cfg`` end to end; writes history, report plot, tables and the registered model.

    ``build(cfg, observer=, run_dir=)`` makes the experiment: a simulated federation by
    default, a served one for ``fedlake server``.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    observer = observer or NullObserver()
    # config errors: nothing touched yet
    experiment = build(cfg, observer=observer, run_dir=run_dir_of(cfg))
    federation = experiment.federation
    run_dir, archived = prepare_run_dir(cfg, resume=resume)
    sinks, lake_root = make_sinks(cfg, run_dir)
    federation.sinks = sinks
    status = "FAILED"
    version = report = baseline = None
    try:
        result = federation.run(resume=resume, stop_after=stop_after)
        if experiment.rounds_ended is not None:
            experiment.rounds_ended(result.stop_reason)
        history_path = run_dir / HISTORY  # current when federation.run returns
        if result.history:
            from fedlake.lakehouse.report import plot_rounds

            report = plot_rounds(result.history, run_dir / REPORT_FILE, title=cfg.name)
        # under DP the last model, not the best by (un-noised) evaluation on the
        # clients' own test splits: picking by it would be an unaccounted release; with
        # no evaluation (a served federation) the last model too
        last_model = federation.privacy is not None or federation.evaluator is None
        chosen = result.state.params if last_model and result.state.round else result.best_params
        finished = chosen is not None and result.stop_reason != "paused"
        if finished and cfg.federation.pooled_baseline:
            observer.message("pooled baseline: training the same model on all clients' rows")
            # the last round's model against pooled training's last: neither picked by
            # the test rows they are compared on
            last = result.state.params
            baseline = run_pooled_baseline(cfg, experiment, last, rounds=result.state.round)
            baseline_path = baseline.write(run_dir)
        if sinks.tracker is not None:
            sinks.tracker.log_artifact(history_path)
            if report is not None:
                sinks.tracker.log_artifact(report)
            if baseline is not None:
                sinks.tracker.log_artifact(baseline_path)
            if finished:
                version = sinks.tracker.register_model(
                    chosen,
                    federation.trainer.spec.to_json(),
                    federation.model_config,
                    name=cfg.lakehouse.model_name,
                    alias=cfg.lakehouse.alias,
                )
        status = "FINISHED" if result.stop_reason != "insufficient_updates" else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if sinks.tracker is not None:
            sinks.tracker.end(status)
    tracking_uri = getattr(sinks.tracker, "tracking_uri", None)
    return RunOutcome(
        result=result,
        run_dir=run_dir,
        history_path=history_path,
        report_path=report,
        tracking_uri=tracking_uri,
        tracker_run_id=result.tracker_run_id,
        model_version=version,
        lakehouse_root=lake_root,
        archived=archived,
        baseline=baseline,
    )


def run_pooled_baseline(
    cfg: RunConfig, experiment: Experiment, params: Any, *, rounds: int
) -> PooledBaseline:
    """Pooled training with the run's local settings, ``rounds x local_epochs`` epochs."""
    from fedlake.core.algorithm import LocalConfig

    algo = cfg.algorithm
    return pooled_baseline(
        experiment.federation.trainer,
        experiment.scenario.data,
        params,
        epochs=max(rounds, 1) * algo.local_epochs,
        config=LocalConfig(batch_size=algo.batch_size, lr=algo.client_lr),
        seed=cfg.seed,
    )
