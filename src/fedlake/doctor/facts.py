"""What a run of a config would work with: population, cohort, model size, attackers.

Computed with the runner's own helpers (cohort sampling, data and model building), so
the doctor's numbers are the run's. A value the config alone cannot give (a table's
clients, a deployed population) is None.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedlake.config import RemoteData, RunConfig, TableData
from fedlake.run.build import cohort_spec
from fedlake.run.scenarios import Scenario, build_data, build_trainer, model_config
from fedlake.simulation.attacks.base import malicious_count


@dataclass(frozen=True)
class Facts:
    """The sizes a run of the config works with (None: not known from the config)."""

    population: int | None  # clients that may be sampled
    cohort: int | None  # clients per round (FedBuff: updates per step)
    model_size: int | None  # weights of the model
    attackers: int | None  # simulated attackers per round ([attack]); None without one


def population_of(cfg: RunConfig) -> int | None:
    """Clients the data section declares (None: a table's or a deployment's clients)."""
    if isinstance(cfg.data, TableData | RemoteData):
        return None
    return cfg.data_clients() - cfg.federation.holdout_clients  # held-out ones never train


def cohort_of(cfg: RunConfig, population: int | None) -> int | None:
    """Clients per round as the run samples them (FedBuff: its buffer)."""
    if cfg.fedbuff is not None:
        return cfg.fedbuff.buffer
    if cfg.federation.clients_per_round is not None:
        return cfg.federation.clients_per_round
    return None if population is None else cohort_spec(cfg).size(population)


def model_size_of(cfg: RunConfig) -> int | None:
    """Weights of the config's model, from the trainer the run would build."""
    d = cfg.data
    if isinstance(d, TableData):
        return None  # its features are known once the table is read
    if isinstance(d, RemoteData):
        scenario = Scenario(None, d.input_shape, d.num_classes)  # type: ignore[arg-type]
    else:
        scenario = build_data(cfg)
    return build_trainer(model_config(cfg.model, scenario)).spec.size


def facts_of(cfg: RunConfig) -> Facts:
    """The facts of ``cfg`` (the data and the model are built; nothing is trained)."""
    population = population_of(cfg)
    cohort = cohort_of(cfg, population)
    attackers = None
    if cfg.attack is not None and cohort is not None:
        attackers = malicious_count(cohort, cfg.attack.fraction or 0.0)
    return Facts(population, cohort, model_size_of(cfg), attackers)
