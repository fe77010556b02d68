"""Linear aggregation pushed down into the executor: partial folds merge into the same model."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fedlake.aggregators import build_aggregator
from fedlake.aggregators.fednova import fednova
from fedlake.algorithms import fedavg, scaffold
from fedlake.backends import ProcessExecutor
from fedlake.client.logreg import LogRegTrainer
from fedlake.core.aggregator import Aggregator
from fedlake.core.update import ClientUpdate
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration.interfaces import FoldingExecutor
from fedlake.orchestration.sampling import CohortSpec
from fedlake.privacy.central import AdaptiveClip, dp_fedavg
from fedlake.simulation import Population, simulate

DATA = fedprox_synthetic(1, 1, num_devices=12, seed=0)
TRAINER = LogRegTrainer(60, 10)


def _updates(n: int, dim: int, seed: int) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(
            f"c{i}",
            {"delta": rng.normal(size=dim).astype(np.float32)},
            float(rng.integers(5, 50)),
            {"steps": float(rng.integers(1, 6)) * 10},
        )
        for i in range(n)
    ]


RULES = {
    "weighted_mean": lambda: build_aggregator({"kind": "mean"}),
    "uniform_mean": lambda: build_aggregator({"kind": "mean", "uniform": True}),
    "norm_bound": lambda: build_aggregator({"kind": "norm_bound", "max_norm": 3.0}),
    "fednova": lambda: fednova(client_lr=0.1, mu=0.01),
    "dp_fedavg": lambda: dp_fedavg(
        clip=2.0, noise_multiplier=0.5, denominator=9, secure_noise=False, seed=3
    ),
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("split", [1, 4, 8])
def test_merged_partial_folds_equal_one_fold(name: str, split: int) -> None:
    agg: Aggregator = RULES[name]()
    assert agg.fold is not None and agg.fold.merge is not None
    ups, dim, state = _updates(9, 40, seed=split), 40, agg.init(40)
    whole = agg.fold.start(dim)
    whole.state = state
    for u in ups:
        whole = agg.fold.add(whole, u)
    merged = agg.fold.start(dim)
    merged.state = state
    for part in np.array_split(np.arange(len(ups)), split):
        acc = agg.fold.start(dim)
        acc.state = state
        for i in part:
            acc = agg.fold.add(acc, ups[i])
        merged = agg.fold.merge(merged, acc)
    a, state_a = agg.fold.result(whole, state)
    b, state_b = agg.fold.result(merged, state)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert merged.count == whole.count == len(ups)
    assert repr(state_a) == repr(state_b)


def test_non_linear_rules_cannot_merge() -> None:
    assert build_aggregator({"kind": "median"}).fold is None


RECIPES = {
    "fedavg": functools.partial(fedavg, client_lr=0.05, local_epochs=1, batch_size=10),
    "scaffold": functools.partial(scaffold, client_lr=0.05, local_epochs=1, batch_size=10),
}


def _run(tmp_path, recipe, *, fold: bool, dropout: float = 0.0, rounds: int = 4):
    def executor(fleet, stores):
        return ProcessExecutor(fleet, stores, workers=2, fold=fold)

    fed = simulate(
        recipe=recipe,
        trainer=TRAINER,
        data=DATA,
        run_dir=tmp_path / ("fold" if fold else "stream"),
        rounds=rounds,
        cohort=CohortSpec(count=8),
        seed=2,
        population=Population(dropout=dropout),
        executor=executor,
    )
    return fed, fed.run()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_folding_executor_reaches_the_streaming_model(tmp_path, name: str) -> None:
    recipe = RECIPES[name]
    fed, folded = _run(tmp_path, recipe, fold=True, dropout=0.25)
    assert isinstance(fed.executor, FoldingExecutor) and fed.executor.folds
    _, streamed = _run(tmp_path, recipe, fold=False, dropout=0.25)
    np.testing.assert_allclose(folded.state.params, streamed.state.params, rtol=1e-5, atol=1e-6)
    for a, b in zip(folded.history, streamed.history, strict=True):
        for key in ("num_completed", "num_dropped", "bytes_up", "bytes_down", "status"):
            assert a[key] == b[key], key
        assert a["eval_accuracy"] == pytest.approx(b["eval_accuracy"], abs=1e-3)
    if name == "scaffold":
        np.testing.assert_allclose(
            folded.state.plugins["scaffold"], streamed.state.plugins["scaffold"], atol=1e-6
        )


def dp_recipe():
    """FedAvg with DP-FedAvg's adaptive clipping (module level: workers unpickle it)."""
    from dataclasses import replace

    rule = dp_fedavg(
        clip=0.5, noise_multiplier=0.3, denominator=8, secure_noise=False, seed=1,
        adaptive=AdaptiveClip(),
    )  # fmt: skip
    return replace(fedavg(client_lr=0.05, batch_size=10), aggregator=rule)


def test_an_adaptive_clip_folds_with_the_rounds_clip(tmp_path) -> None:
    _, folded = _run(tmp_path, dp_recipe, fold=True)
    _, streamed = _run(tmp_path, dp_recipe, fold=False)
    np.testing.assert_allclose(folded.state.params, streamed.state.params, rtol=1e-5, atol=1e-6)
    assert folded.state.aggregator_state.clip == pytest.approx(
        streamed.state.aggregator_state.clip, rel=1e-9
    )
