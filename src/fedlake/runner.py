"""Run an experiment from a config: build everything, run the federation, record the results."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedlake.aggregators import NEEDS_F, build_aggregator
from fedlake.algorithms import ALGORITHMS, personalized
from fedlake.attacks import Adversary, build_attack
from fedlake.backends import InlineExecutor, ProcessExecutor
from fedlake.backends.base import Executor
from fedlake.compression.pipeline import compressed
from fedlake.config import (
    AlgorithmConfig,
    CompressionConfig,
    ConfigError,
    PersonalizationConfig,
    ResumeError,
    RunConfig,
    options,
    parse_config,
)
from fedlake.config.algorithm import OWN_AVERAGING
from fedlake.core.algorithm import Algorithm
from fedlake.core.personal import Personalization, mask_for
from fedlake.orchestration.checkpoint import CHECKPOINT, HISTORY
from fedlake.orchestration.events import NullObserver, RunObserver
from fedlake.orchestration.federation import CohortTooSmallError, Federation, RunResult
from fedlake.orchestration.sampling import CohortSpec, Population
from fedlake.orchestration.sinks import RunSinks
from fedlake.privacy.build import DPSettings, apply_dp
from fedlake.run_baseline import PooledBaseline, pooled_baseline
from fedlake.run_privacy import build_privacy, privacy_line
from fedlake.scenarios import build_data, build_trainer, model_config

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


def run_dir_of(cfg: RunConfig) -> Path:
    """The folder that holds a run's checkpoint, tables, MLflow store and report."""
    return Path(cfg.output_dir) / cfg.name


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


def make_executor(cfg: RunConfig) -> Executor:
    """The configured executor."""
    if cfg.executor.kind == "process":
        return ProcessExecutor(cfg.executor.workers)
    return InlineExecutor(chunk=InlineExecutor().chunk if cfg.executor.vectorize else 1)


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


def flat_params(cfg: RunConfig) -> dict[str, Any]:
    """The config as flat ``section.key`` params for the tracker."""
    out: dict[str, Any] = {"name": cfg.name, "seed": cfg.seed}
    for section, values in cfg.model_dump(by_alias=True).items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items() if v is not None})
    return out


def aggregator_options(algo: AlgorithmConfig, *, attackers: int | None) -> dict[str, Any]:
    """The aggregator's options, with the simulated threat model's defaults.

    With an attack configured, the defender is assumed to know an upper bound on the
    attackers per round (as the rules' guarantees do): ``f`` and the trimmed mean's
    ``trim`` (values dropped at each end) default to their number.
    """
    spec = options(algo.aggregator)
    trims = {"trim", "trim_ratio"} & set(spec)
    if spec["kind"] == "trimmed_mean" and not trims and attackers is not None:
        spec["trim"] = attackers
    if spec["kind"] in NEEDS_F and "f" not in spec:
        if attackers is None:
            raise ValueError(
                f"{spec['kind']} needs f, the number of Byzantine clients per round it must "
                "tolerate (it defaults to the simulated attackers per round when an [attack] "
                "section is given)"
            )
        spec["f"] = attackers
    return spec


def build_recipe(
    algo: AlgorithmConfig,
    compression: CompressionConfig,
    *,
    attackers: int | None = None,
    dp: DPSettings | None = None,
    personal: PersonalizationConfig | None = None,
) -> Algorithm:
    """The configured recipe with its aggregator, compression and DP (picklable for workers)."""
    recipe = ALGORITHMS[algo.name](**algo.recipe_options())
    if algo.name not in OWN_AVERAGING:  # scaffold and fednova bring their own averaging
        aggregator = build_aggregator(aggregator_options(algo, attackers=attackers))
        recipe = dataclasses.replace(recipe, aggregator=aggregator)
    if personal is not None:
        recipe = personalized(recipe, Personalization(**personal.model_dump()))
    prune = compression.prune.model_dump() if compression.prune is not None else None
    recipe = compressed(
        recipe,
        upload=compression.stages("upload"),
        download=compression.stages("download"),
        error_feedback=compression.error_feedback,
        prune=prune,
    )
    return apply_dp(recipe, dp) if dp is not None else recipe


@contextmanager
def config_section(name: str) -> Iterator[None]:
    """Turn an error found while building ``name`` into a one-line ConfigError naming it."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(f"{name}: {text}") from exc


def build_federation(cfg: RunConfig, *, observer: RunObserver) -> Federation:
    """Wire data, trainer, recipe and executor into a Federation (sinks are attached later).

    Everything the config cannot check by itself (a table's path and clients, a model
    option for the wrong kind, a partition that cannot be made) fails here as a
    ConfigError, before the run folder is touched.
    """
    with config_section("data"):
        scenario = build_data(cfg)
    with config_section("model"):
        mcfg = model_config(cfg.model, scenario)
        trainer = build_trainer(mcfg)
    fed = cfg.federation
    cohort = (
        CohortSpec(count=fed.clients_per_round)
        if fed.clients_per_round is not None
        else CohortSpec(fraction=fed.fraction or 0.1)
    )
    with config_section("federation"):
        size = cohort.size(len(scenario.data.client_ids()))
    with config_section("attack"):
        adversary = build_adversary(cfg, scenario.num_classes, cohort=size)
    attackers = adversary.count(size) if adversary is not None else None
    population = len(scenario.data.client_ids())
    dp, plan = None, None
    if cfg.privacy is not None:
        with config_section("privacy"):
            dp, plan = build_privacy(cfg, mcfg, population=population, cohort=size)
            observer.message(privacy_line(dp, plan))
    make_algorithm = functools.partial(
        build_recipe,
        cfg.algorithm,
        cfg.compression,
        attackers=attackers,
        dp=dp,
        personal=cfg.personalization,
    )
    with config_section("algorithm"):
        recipe = ALGORITHMS[cfg.algorithm.name](**cfg.algorithm.recipe_options())
    if cfg.personalization is not None:
        with config_section("personalization"):
            personal = Personalization(**cfg.personalization.model_dump())
            mask_for(personal, trainer.spec)  # the layers must exist in this model
            recipe = personalized(recipe, personal)
    if dp is not None:
        with config_section("privacy"):
            apply_dp(recipe, dp)
    with config_section("algorithm.aggregator"):  # fails here, not in a worker
        if cfg.algorithm.name not in OWN_AVERAGING:
            build_aggregator(aggregator_options(cfg.algorithm, attackers=attackers))
    with config_section("compression"):
        make_algorithm()  # fails here, not in a worker, on a setting the config cannot check
    with config_section("federation"):
        return Federation(
            make_algorithm=make_algorithm,
            trainer=trainer,
            data=scenario.data,
            run_dir=run_dir_of(cfg),
            rounds=fed.rounds,
            cohort=cohort,
            seed=cfg.seed,
            min_clients=fed.min_clients,
            max_retries=fed.max_retries,
            target_accuracy=fed.target_accuracy,
            population=Population(
                dropout=fed.dropout,
                stragglers=fed.stragglers,
                policy=fed.straggler_policy,
                deadline_s=fed.deadline_s,
                speed=fed.device_speed,
                speed_spread=fed.speed_spread,
            ),
            eval_clients=fed.eval_clients,
            executor=make_executor(cfg),
            observer=observer,
            model_config=mcfg,
            run_params=flat_params(cfg)
            | ({"privacy.noise_multiplier": dp.noise_multiplier} if dp is not None else {}),
            adversary=adversary,
            privacy=plan,
        )


def build_adversary(cfg: RunConfig, num_classes: int, *, cohort: int) -> Adversary | None:
    """The simulated attackers of ``cfg.attack`` (None without an attack section).

    Raises:
        CohortTooSmallError: the fraction of a cohort of ``cohort`` clients is no attacker.
    """
    if cfg.attack is None:
        return None
    fraction = cfg.attack.fraction
    if fraction is None and cfg.attack.kind != "none":
        raise ValueError(
            "fraction is required: the share of each round's cohort that attacks, in [0, 1)"
        )
    attack = build_attack(options(cfg.attack), num_classes=num_classes)
    adversary = Adversary(attack, fraction or 0.0)
    if cfg.attack.kind != "none" and adversary.count(cohort) == 0:
        raise CohortTooSmallError(
            f"fraction {fraction} of a cohort of {cohort} clients is no attacker at all; "
            "raise the fraction or sample more clients per round"
        )
    return adversary


def run_experiment(
    cfg: RunConfig,
    *,
    resume: bool = False,
    observer: RunObserver | None = None,
    stop_after: int | None = None,
) -> RunOutcome:
    """Run ``cfg`` end to end; writes history, report plot, tables and the registered model."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    observer = observer or NullObserver()
    federation = build_federation(cfg, observer=observer)  # config errors: nothing touched yet
    run_dir, archived = prepare_run_dir(cfg, resume=resume)
    sinks, lake_root = make_sinks(cfg, run_dir)
    federation.sinks = sinks
    status = "FAILED"
    version = report = baseline = None
    try:
        result = federation.run(resume=resume, stop_after=stop_after)
        history_path = run_dir / HISTORY  # current when federation.run returns
        if result.history:
            from fedlake.lakehouse.report import plot_rounds

            report = plot_rounds(result.history, run_dir / REPORT_FILE, title=cfg.name)
        # under DP the last model, not the best by (un-noised) evaluation on the
        # clients' own test splits: picking by it would be an unaccounted release
        chosen = result.state.params if federation.privacy else result.best_params
        finished = chosen is not None and result.stop_reason != "paused"
        if finished and cfg.federation.pooled_baseline:
            observer.message("pooled baseline: training the same model on all clients' rows")
            # the last round's model against pooled training's last: neither picked by
            # the test rows they are compared on
            last = result.state.params
            baseline = run_pooled_baseline(cfg, federation, last, rounds=result.state.round)
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
    cfg: RunConfig, federation: Federation, params: Any, *, rounds: int
) -> PooledBaseline:
    """Pooled training with the run's local settings, ``rounds x local_epochs`` epochs."""
    from fedlake.core.algorithm import LocalConfig

    algo = cfg.algorithm
    return pooled_baseline(
        federation.trainer,
        federation.data,
        params,
        epochs=max(rounds, 1) * algo.local_epochs,
        config=LocalConfig(batch_size=algo.batch_size, lr=algo.client_lr),
        seed=cfg.seed,
    )
