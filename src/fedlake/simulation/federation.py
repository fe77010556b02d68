"""A simulated federation: the server's Federation over simulated clients, in one call.

The composition the simulator needs, and nothing in the core knows about: the clients'
fleet and their in-memory stores (saved with each checkpoint), an executor (inline,
process, or yours), the population model's dropouts and stragglers, the adversary's
attackers, and central evaluation on the clients' test splits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedlake.algorithms.spec import RecipeSpec
from fedlake.backends.registry import EXECUTORS
from fedlake.client.fleet import ClientFleet
from fedlake.core.algorithm import Algorithm
from fedlake.core.trainer import Trainer
from fedlake.data.base import ClientData
from fedlake.orchestration.buffered import SECURE_WITH_FEDBUFF, FedBuffSettings, check_buffered
from fedlake.orchestration.events import NullObserver, RunObserver
from fedlake.orchestration.federation import Federation
from fedlake.orchestration.interfaces import Executor, Snapshotable
from fedlake.orchestration.sampling import CohortSpec
from fedlake.orchestration.secure import SecureSettings
from fedlake.orchestration.sinks import RunSinks
from fedlake.privacy.plan import PrivacyPlan
from fedlake.simulation.adversarial import AdversarialExecutor
from fedlake.simulation.attacks.adversary import Adversary
from fedlake.simulation.attacks.poisoning import MALICIOUS, malicious_plugins
from fedlake.simulation.buffered import ClockExecutor
from fedlake.simulation.devices import DeviceProfiles
from fedlake.simulation.evaluation import CentralEvaluation, split_holdout
from fedlake.simulation.population import Population, PopulationExecutor
from fedlake.simulation.stores import SimulatedStores

__all__ = ["ExecutorFactory", "simulate"]

ExecutorFactory = Callable[[ClientFleet, SimulatedStores], Executor]


def simulate(
    *,
    recipe: RecipeSpec | Callable[[], Algorithm],
    trainer: Trainer,
    data: ClientData,
    run_dir: Path,
    rounds: int,
    cohort: CohortSpec,
    seed: int = 0,
    min_clients: int = 1,
    max_retries: int = 2,
    target_accuracy: float | None = None,
    population: Population | None = None,
    eval_clients: int | None = None,
    holdout_clients: int = 0,
    executor: str | ExecutorFactory = "inline",
    workers: int | None = None,
    vectorize: bool = True,
    fold: bool = False,
    task_retries: int = 0,
    sinks: RunSinks | None = None,
    observer: RunObserver | None = None,
    model_config: dict[str, Any] | None = None,
    run_params: dict[str, Any] | None = None,
    adversary: Adversary | None = None,
    privacy: PrivacyPlan | None = None,
    fedbuff: FedBuffSettings | None = None,
    devices: DeviceProfiles | None = None,
    secure: SecureSettings | None = None,
) -> Federation:
    """A Federation whose clients are simulated in this machine.

    Args:
        recipe: the recipe's spec, or a picklable zero-argument factory of the algorithm.
        executor: a name of ``fedlake.backends.registry.EXECUTORS`` (``"inline"``:
            vectorised unless ``vectorize`` is false; ``"process"``: ``workers`` spawned
            processes), or ``factory(fleet, stores) -> Executor``.
        fold: the executor screens and folds replies where the clients run (``process``,
            ``spark``; linear aggregators, no simulated dropouts or attacks).
        task_retries: ``spark``: tries of a failed task after the first.
        population: dropouts, stragglers and device speeds (None: every client available
            and as fast as the rest).
        adversary: the simulated attackers (None: every client honest).
        eval_clients: how many clients' test splits evaluate the global model.
        holdout_clients: clients drawn with the seed that never train; the global model is
            evaluated on their test splits only (0: on the training clients' own splits).
        fedbuff: asynchronous buffered steps on a simulated clock (a round is a server
            step; ``cohort`` is its K), with ``devices``' availability and durations
            (None: :class:`DeviceProfiles` defaults seeded by ``seed``).
        secure: secure aggregation (SecAgg+) in every round; the population's dropouts
            and stragglers act in its training stage, after the clients shared keys.

    The other arguments are the :class:`~fedlake.orchestration.federation.Federation`'s.
    """
    population = population or Population()
    if secure is not None:
        _check_secure(adversary, fold, fedbuff)
    variants = {}
    if adversary is not None and adversary.attack.poisons:
        variants[MALICIOUS] = functools.partial(malicious_plugins, adversary.attack)
    fleet = ClientFleet(data, trainer, recipe, variants=variants)
    algorithm = fleet.algorithm  # the server's side and the inline clients' share it
    stores = SimulatedStores(algorithm)
    inner: Executor
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
        agg = algorithm.aggregator
        if fold and (agg.fold is None or agg.fold.merge is None):
            raise ValueError(
                f"fold = true needs a linear aggregator; {agg.name} is not one (it needs "
                "every update at once): set fold = false"
            )
        if fold and (population.dropout > 0 or population.heterogeneous or adversary):
            raise ValueError(
                "fold = true cannot be combined with simulated dropouts, stragglers or "
                "attacks: they act on each reply, and folding returns only partial sums"
            )
        inner = EXECUTORS[executor](fleet, stores, workers=workers, vectorize=vectorize, fold=fold)
    else:
        inner = executor(fleet, stores)
    if fedbuff is not None:
        _check_clock(algorithm, population, adversary, fold)
    if population.dropout > 0 or population.heterogeneous:
        inner = PopulationExecutor(inner, population, epochs=algorithm.local.epochs)
    kept_local = algorithm.kept_local(trainer.spec)
    if adversary is not None:
        inner = AdversarialExecutor(
            inner,
            adversary,
            dim=trainer.spec.size,
            codec=algorithm.compression.upload,
            kept_local=kept_local,
        )
    client_ids, held_out = split_holdout(data.client_ids(), holdout_clients, seed)
    snapshots: tuple[Snapshotable, ...] = (stores,)
    if fedbuff is not None:
        profiles = devices or DeviceProfiles(seed=seed)
        inner = ClockExecutor(inner, client_ids, profiles, fedbuff, seed)
        snapshots = (stores, inner)
    evaluator = CentralEvaluation(
        data,
        trainer,
        held_out or client_ids,
        algorithm=algorithm,
        store=stores,
        seed=seed,
        eval_clients=eval_clients,
    )
    return Federation(
        algorithm=algorithm,
        trainer=trainer,
        client_ids=client_ids,
        executor=inner,
        run_dir=run_dir,
        rounds=rounds,
        cohort=cohort,
        seed=seed,
        min_clients=min_clients,
        max_retries=max_retries,
        target_accuracy=target_accuracy,
        evaluator=evaluator,
        sinks=sinks,
        observer=observer or NullObserver(),
        model_config=model_config or {},
        run_params=run_params or {},
        privacy=privacy,
        snapshots=snapshots,
        report_stragglers=population.heterogeneous,
        secure=secure,
    )


def _check_secure(adversary: Adversary | None, fold: bool, fedbuff: FedBuffSettings | None) -> None:
    """Refuse, with the reason, what secure aggregation does not combine with."""
    if fedbuff is not None:
        raise ValueError(SECURE_WITH_FEDBUFF)
    if fold:
        raise ValueError(
            "fold = true with secure aggregation: the executor would fold plaintext "
            "updates, and with SecAgg+ the server sums masked vectors only; set fold = false"
        )
    if adversary is not None:
        raise ValueError(
            "simulated attacks act on each client's update as the server receives it, "
            "which secure aggregation hides (and a poisoned update cannot be screened): "
            "remove [attack] with secure aggregation"
        )


def _check_clock(
    algorithm: Algorithm, population: Population, adversary: Adversary | None, fold: bool
) -> None:
    """Refuse, with the reason, what FedBuff on the simulated clock does not combine with."""
    check_buffered(algorithm)
    if population.dropout > 0 or population.heterogeneous:
        raise ValueError(
            "dropout and stragglers: with fedbuff the device profiles decide who is "
            "available and how long each takes; remove them"
        )
    if adversary is not None:
        raise ValueError("simulated attacks are not combined with fedbuff yet; remove [attack]")
    if fold:
        raise ValueError("fold = true: FedBuff's steps screen each arrival; set fold = false")
