"""Build a run's data source and trainer from its config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fedlake.config import (
    ActivityData,
    ModelConfig,
    RemoteData,
    RunConfig,
    SklearnData,
    SyntheticData,
    TableData,
)
from fedlake.core.trainer import Trainer
from fedlake.data.base import ClientData
from fedlake.data.preprocess.pipeline import MODEL_CONFIG_KEY

if TYPE_CHECKING:
    from fedlake.data.preprocess import FeaturePipeline
    from fedlake.data.sources import TableClientData


@dataclass(frozen=True)
class Scenario:
    """Data, the shape of one example, the number of classes and the feature pipeline."""

    data: ClientData
    input_shape: tuple[int, ...]
    num_classes: int
    preprocessing: FeaturePipeline | None = None


def build_data(cfg: RunConfig) -> Scenario:
    """The ClientData of ``cfg.data`` with its example shape, class count and pipeline.

    A table's feature pipeline is fitted from its clients' summaries (deterministic in
    the seed: a resumed run fits the same one).
    """
    d = cfg.data
    data: ClientData
    pipeline = None
    if isinstance(d, RemoteData):
        raise ValueError(
            "scenario 'remote' has no data here: its clients bring their own; serve it with "
            "`fedlake server --config ...` (simulate with a scenario that has data)"
        )
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

        table = TableClientData(
            d.path,
            format=d.format,
            client_column=d.client_column,
            label_column=d.label_column,
            feature_columns=d.feature_columns,
            categorical=d.categorical,
        )
        pipeline = table_pipeline(d, table, seed=cfg.seed)
        data = table.with_pipeline(pipeline)
        num_classes = d.num_classes
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown data section {type(d).__name__}")
    first = data.load(data.client_ids()[0])
    shape = tuple(int(s) for s in first.x_train.shape[1:])
    return Scenario(data, shape, num_classes, preprocessing=pipeline)


def table_pipeline(d: TableData, table: TableClientData, *, seed: int) -> FeaturePipeline | None:
    """The pipeline of a table scenario (None: its features are used as they are).

    ``preprocess = "auto"`` fits one for tables of scalar columns unless the table was
    written by :func:`write_client_table` (its features are model-ready, with a stored
    shape). ``"none"`` refuses categories, pointing at ``"auto"``.
    """
    from fedlake.data.preprocess import PipelineOptions, fit_federated

    if d.preprocess == "none" or table.has_lists or table.stored_shape:
        if table.needs_preprocessing():
            names = [c for c, k in table.kinds.items() if k == "categorical"]
            why = "preprocess = 'none'" if d.preprocess == "none" else "its stored feature shape"
            raise ValueError(
                f"columns {names} hold categories, which the table's features cannot take "
                f"with {why}; set preprocess = 'auto' or encode them as numbers"
            )
        return None
    options = PipelineOptions(
        missing_indicator=d.missing_indicator,
        max_categories=d.max_categories,
        hash_buckets=d.hash_buckets,
        min_category_count=d.min_category_count,
        bins=d.bins,
    )
    fitted = fit_federated(
        table,
        options,
        seed=seed,
        epsilon=d.summary_epsilon,
        mechanism=d.summary_noise,
        delta=d.summary_delta,
    )
    return replace(fitted, input_types=table.input_types())


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
    if scenario.preprocessing is not None:
        cfg[MODEL_CONFIG_KEY] = scenario.preprocessing.to_json()
    return cfg


def build_trainer(config: dict[str, Any]) -> Trainer:
    """A trainer from a model config made by :func:`model_config`."""
    from fedlake.models.registry import trainer_from_config

    return trainer_from_config(config)
