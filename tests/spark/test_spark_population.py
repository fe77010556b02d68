"""A cross-device round on local Spark: 1,000 devices sampled from a population of a
million procedurally generated wearable users, generated inside the tasks, folded there
and merged by tree reduction."""

from __future__ import annotations

import functools
import pickle
from typing import Any

import numpy as np

from fedlake.algorithms.fedavg import fedavg
from fedlake.backends.spark import SparkExecutor
from fedlake.client.fleet import ClientFleet
from fedlake.client.logreg import LogRegTrainer
from fedlake.client.stores import MemoryStateStore
from fedlake.compression.messages import encode_model
from fedlake.core.task import ClientTask
from fedlake.data.activity import ACTIVITIES, FEATURE_NAMES, ActivityPopulation
from fedlake.orchestration.folding import FoldPlan


def test_a_thousand_devices_of_a_million(spark: Any) -> None:
    population = ActivityPopulation(1_000_000, seed=0, features=True)
    trainer = LogRegTrainer(len(FEATURE_NAMES), len(ACTIVITIES))
    fleet = ClientFleet(population, trainer, functools.partial(fedavg, client_lr=0.1))
    assert len(pickle.dumps(fleet)) < 10_000  # what travels to the tasks: no user's data
    ids = population.client_ids()
    rng = np.random.default_rng(0)
    cohort = [ids[int(i)] for i in np.sort(rng.choice(len(ids), 1000, replace=False))]
    params = trainer.init_params(0)
    task = ClientTask(round=0, attempt=0, seed=1, model=encode_model(params, None, None, rng))
    executor = SparkExecutor(fleet, MemoryStateStore(), spark=spark, partitions=8, fold=True)
    try:
        parts = executor.fold_clients(task, cohort, FoldPlan(dim=trainer.spec.size, sent=None))
    finally:
        executor.close()
    assert len(parts) == 1  # one partial fold reaches the driver, not 1,000 updates
    (folded,) = parts
    assert folded.count == 1000 and len(folded.records) == 1000
    acc = folded.accumulators["delta"]
    assert acc.count == 1000 and np.isfinite(acc.total).all()
    assert acc.weight == sum(r.num_examples for r in folded.records)
