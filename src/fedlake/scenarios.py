"""Build a run's data source and trainer from its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedlake.client.trainer import Trainer
from fedlake.config import (
    ActivityData,
    ModelConfig,
    RunConfig,
    SklearnData,
    SyntheticData,
    TableData,
)
from fedlake.data.base import ClientData


@dataclass(frozen=True)
class Scenario:
    """Data, the shape of one example, and the number of classes."""

    data: ClientData
    input_shape: tuple[int, ...]
    num_classes: int


def build_data(cfg: RunConfig) -> Scenario:
    """The ClientData of ``cfg.data`` with its example shape and class count."""
    d = cfg.data
    data: ClientData
    if isinstance(d, ActivityData):
        from fedlake.data.activity import ACTIVITIES, ActivityPopulation

        data = ActivityPopulation(
            d.num_clients, seed=cfg.seed, test_fraction=d.test_fraction, features=d.features
        )
        num_classes = len(ACTIVITIES)
    elif isinstance(d, SyntheticData):
        from fedlake.data.synthetic import fedprox_synthetic

        data = fedprox_synthetic(
            d.alpha, d.beta, iid=d.iid, num_devices=d.num_clients, seed=cfg.seed
        )
        num_classes = 10
    elif isinstance(d, SklearnData):
        from fedlake.data.tabular import sklearn_federated

        data = sklearn_federated(
            d.scenario,
            num_clients=d.num_clients,
            scheme=d.partition,
            alpha=d.alpha,
            seed=cfg.seed,
            test_fraction=d.test_fraction,
        )
        num_classes = 10 if d.scenario == "digits" else 2
    elif isinstance(d, TableData):
        from fedlake.data.sources import TableClientData

        data = TableClientData(
            d.path, format=d.format, client_column=d.client_column, label_column=d.label_column
        )
        num_classes = d.num_classes
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown data section {type(d).__name__}")
    first = data.load(data.client_ids()[0])
    return Scenario(data, tuple(int(s) for s in first.x_train.shape[1:]), num_classes)


def model_config(model: ModelConfig, scenario: Scenario) -> dict[str, Any]:
    """The JSON-able model description stored with every model (rebuilds the trainer)."""
    cfg: dict[str, Any] = {
        "kind": model.kind,
        "input_shape": list(scenario.input_shape),
        "num_classes": scenario.num_classes,
    }
    if model.hidden is not None:
        cfg["hidden"] = list(model.hidden)
    if model.channels is not None:
        cfg["channels"] = list(model.channels)
    return cfg


def build_trainer(config: dict[str, Any]) -> Trainer:
    """A trainer from a model config made by :func:`model_config`."""
    from fedlake.models.registry import build_trainer as build

    opts = dict(config)
    for key in ("hidden", "channels"):
        if key in opts:
            opts[key] = tuple(opts[key])
    return build(**opts)
