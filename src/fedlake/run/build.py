"""Build a run from its config: data, trainer, recipe spec, executor, attackers, privacy.

Everything the config cannot check by itself (a table's path and clients, a model option
for the wrong kind, a partition that cannot be made, a recipe setting no worker could
build) fails here as a one-line ConfigError naming its section, before the run folder is
touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlake.aggregators import build_aggregator
from fedlake.algorithms import ALGORITHMS, personalized
from fedlake.algorithms.private import apply_dp
from fedlake.algorithms.spec import RecipeSpec, aggregator_options, build_algorithm
from fedlake.config import ConfigError, RunConfig, options
from fedlake.config.algorithm import OWN_AVERAGING
from fedlake.core.personal import Personalization, mask_for
from fedlake.orchestration.buffered import FedBuffSettings
from fedlake.orchestration.events import RunObserver
from fedlake.orchestration.federation import CohortTooSmallError, Federation
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.secure import SecureSettings
from fedlake.privacy.distributed import DistributedDP
from fedlake.run.privacy import build_privacy, privacy_line
from fedlake.run.scenarios import Scenario, build_data, build_trainer, model_config
from fedlake.simulation import Population, simulate
from fedlake.simulation.attacks import Adversary, build_attack

__all__ = [
    "Experiment",
    "build_adversary",
    "build_experiment",
    "build_federation",
    "config_section",
    "flat_params",
    "recipe_spec",
    "run_dir_of",
]


@dataclass
class Experiment:
    """A built run: the federation, its scenario (data, shapes), recipe spec and attackers."""

    federation: Federation
    scenario: Scenario
    spec: RecipeSpec
    adversary: Adversary | None = None
    # called with the stop reason once the rounds end, before the report and registration
    # (a served federation tells its clients at once rather than after MLflow)
    rounds_ended: Callable[[str], None] | None = None


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


def recipe_spec(cfg: RunConfig, *, attackers: int | None, dp: Any, trainer_spec: Any) -> RecipeSpec:
    """The run's recipe spec, each part checked under its own section's name."""
    compression = cfg.compression
    if secure_levels(cfg) is not None:  # the secure encoding quantises: no upload codec
        compression = compression.model_copy(update={"upload": ()})
    spec = RecipeSpec(
        algorithm=cfg.algorithm,
        compression=compression,
        attackers=attackers,
        dp=dp,
        personalization=cfg.personalization,
    )
    with config_section("algorithm"):
        recipe = ALGORITHMS[cfg.algorithm.name](**cfg.algorithm.recipe_options())
    if cfg.personalization is not None:
        with config_section("personalization"):
            personal = Personalization(**cfg.personalization.model_dump())
            mask_for(personal, trainer_spec)  # the layers must exist in this model
            recipe = personalized(recipe, personal)
    if dp is not None:
        with config_section("privacy"):
            apply_dp(recipe, dp)
    with config_section("algorithm.aggregator"):  # fails here, not in a worker
        if cfg.algorithm.name not in OWN_AVERAGING:
            build_aggregator(aggregator_options(cfg.algorithm, attackers=attackers))
    with config_section("compression"):
        build_algorithm(spec)  # fails here, not in a worker, on what the config cannot check
    return spec


def build_experiment(cfg: RunConfig, *, observer: RunObserver, run_dir: Path) -> Experiment:
    """Wire data, trainer, recipe spec and executor into a simulated Federation."""
    with config_section("data"):
        scenario = build_data(cfg)
    with config_section("model"):
        mcfg = model_config(cfg.model, scenario)
        trainer = build_trainer(mcfg)
    fed = cfg.federation
    clients = len(scenario.data.client_ids())
    if fed.holdout_clients:
        with config_section("federation"):
            if fed.holdout_clients >= clients:
                raise ValueError(
                    f"holdout_clients ({fed.holdout_clients}) must leave clients to train: "
                    f"the data has {clients}"
                )
        clients -= fed.holdout_clients  # the training population (cohorts, DP's rate)
    buff = fedbuff_of(cfg, clients)
    cohort = cohort_spec(cfg) if buff is None else CohortSpec(count=buff.buffer)
    with config_section("federation"):
        size = cohort.size(clients)
    with config_section("attack"):
        adversary = build_adversary(cfg, scenario.num_classes, cohort=size)
    attackers = adversary.count(size) if adversary is not None else None
    # FedBuff's steps take whoever arrives, not a sample the server drew: no amplification
    # by sampling is claimed (each step is accounted as if every client were in it)
    dp, plan = privacy_of(cfg, mcfg, clients if buff is None else size, size, observer)
    spec = recipe_spec(cfg, attackers=attackers, dp=dp, trainer_spec=trainer.spec)

    with config_section("federation"):
        federation = simulate(
            recipe=spec,
            trainer=trainer,
            data=scenario.data,
            run_dir=run_dir,
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
            holdout_clients=fed.holdout_clients,
            executor=cfg.executor.kind,
            workers=cfg.executor.workers,
            vectorize=cfg.executor.vectorize,
            fold=cfg.executor.fold,
            task_retries=cfg.executor.task_retries,
            observer=observer,
            model_config=mcfg,
            run_params=run_params(cfg, dp),
            adversary=adversary,
            privacy=plan,
            fedbuff=buff,
            secure=secure_settings(cfg, dp),
        )
    return Experiment(federation, scenario, spec, adversary)


def secure_levels(cfg: RunConfig) -> int | None:
    """Levels per clip of a secure run whose upload chain is one ``quantize`` stage (the
    secure encoding quantises with them before masking); None otherwise."""
    upload = cfg.compression.upload
    if cfg.secure() is None or not upload:
        return None
    stage = upload[0]
    with config_section("compression"):
        if len(upload) != 1 or stage.kind != "quantize":
            raise ValueError(
                f"upload = {' -> '.join(s.kind for s in upload)} with secure aggregation: "
                "masked updates are summed in a ring, so only a single quantize stage "
                "(quantisation before masking, linear) composes with it"
            )
        given = stage.model_fields_set
        if not stage.stochastic or "bucket" in given or cfg.compression.error_feedback:
            raise ValueError(
                "with secure aggregation, quantize uses the ring's shared scale (the clip) "
                "and unbiased stochastic rounding: remove bucket, stochastic = false and "
                "error_feedback"
            )
    return 2 ** (stage.bits - 1)


def secure_settings(cfg: RunConfig, dp: Any = None) -> SecureSettings | None:
    """The ``[secure_aggregation]`` settings of a run (None: plain rounds), with the
    quantize stage's levels and distributed DP (``dp``: the resolved DPSettings)."""
    section = cfg.secure()
    if section is None:
        return None
    distributed = None
    if dp is not None and dp.mechanism == "distributed":
        distributed = DistributedDP(
            noise_multiplier=dp.noise_multiplier,
            clip=dp.clip,
            denominator=dp.denominator,
            secure_noise=dp.secure_noise,
        )
    return SecureSettings(
        clip=section.clip,
        max_weight=section.max_weight,
        expected_dropout=section.expected_dropout,
        degree=section.degree,
        threshold=section.threshold,
        bits=section.bits,
        levels=secure_levels(cfg),
        dp=distributed,
    )


def cohort_spec(cfg: RunConfig) -> CohortSpec:
    """Who a round samples: ``clients_per_round`` clients, else a ``fraction`` (0.1)."""
    fed = cfg.federation
    if fed.clients_per_round is not None:
        return CohortSpec(count=fed.clients_per_round)
    return CohortSpec(fraction=fed.fraction or 0.1)


def fedbuff_of(cfg: RunConfig, enrolled: int) -> FedBuffSettings | None:
    """The ``[fedbuff]`` settings of a run of ``enrolled`` clients (None: synchronous
    rounds), checked against the rest of the config."""
    section = cfg.fedbuff
    if section is None:
        return None
    with config_section("fedbuff"):
        if section.buffer > enrolled:
            raise ValueError(
                f"buffer ({section.buffer}) > the {enrolled} clients: a step takes "
                "at most one update per client, so it could never fill"
            )
        p = cfg.privacy
        if p is not None and p.mechanism == "central" and p.sampling == "poisson":
            raise ValueError(
                "central DP with sampling = 'poisson': FedBuff's steps take whichever clients "
                "arrive, not a Poisson sample, so no amplification by sampling holds; set "
                "privacy.sampling = 'fixed' (each step is then accounted as if every client "
                "were in it)"
            )
        return FedBuffSettings(
            concurrency=section.concurrency,
            buffer=section.buffer,
            max_staleness=section.max_staleness,
            staleness=section.staleness,
        )


def privacy_of(
    cfg: RunConfig, mcfg: Any, population: int, cohort: int, observer: RunObserver
) -> tuple[Any, Any]:
    """``(dp, plan)`` of the config's ``[privacy]`` (said to ``observer``); Nones without."""
    if cfg.privacy is None:
        return None, None
    with config_section("privacy"):
        dp, plan = build_privacy(cfg, mcfg, population=population, cohort=cohort)
        observer.message(privacy_line(dp, plan))
    return dp, plan


def run_params(cfg: RunConfig, dp: Any) -> dict[str, Any]:
    """The tracker's params: the flat config, and the noise multiplier DP settled on."""
    noise = {"privacy.noise_multiplier": dp.noise_multiplier} if dp is not None else {}
    return flat_params(cfg) | noise


def build_federation(cfg: RunConfig, *, observer: RunObserver) -> Federation:
    """The run's Federation (sinks are attached later); see :func:`build_experiment`."""
    return build_experiment(cfg, observer=observer, run_dir=run_dir_of(cfg)).federation


def run_dir_of(cfg: RunConfig) -> Path:
    """The folder that holds a run's checkpoint, tables, MLflow store and report."""
    return Path(cfg.output_dir) / cfg.name


def flat_params(cfg: RunConfig) -> dict[str, Any]:
    """The config as flat ``section.key`` params for the tracker."""
    out: dict[str, Any] = {"name": cfg.name, "seed": cfg.seed}
    for section, values in cfg.model_dump(by_alias=True).items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items() if v is not None})
    return out


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
