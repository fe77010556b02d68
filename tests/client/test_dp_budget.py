"""A DP-SGD client keeps its own history and refuses a round past its budget."""

from __future__ import annotations

import numpy as np
import pytest

from fedlake.client.dp_budget import (
    BUDGET_EXHAUSTED,
    DP_HISTORY,
    check_budget,
    planned_round,
    sampling_rate,
    spent,
    steps_per_epoch,
)
from fedlake.core.algorithm import LocalConfig, SampleDP
from fedlake.privacy.accounting import epsilon
from fedlake.privacy.ledger import LedgerEntry


def test_planned_round_matches_the_dpsgd_conventions() -> None:
    dp = SampleDP(noise_multiplier=1.1, max_grad_norm=1.0)
    cfg = LocalConfig(epochs=3, batch_size=20, lr=0.1)
    assert planned_round(dp, cfg, 90) == (1.1, 20 / 90, 3 * 4)  # round(4.5) = 4
    assert sampling_rate(10, 32) == 1.0 and steps_per_epoch(10, 32) == 1


def test_spent_is_the_accountants_epsilon_of_the_history() -> None:
    dp = SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    rounds = ((1.0, 0.1, 10), (1.0, 0.1, 10), (2.0, 0.2, 5))
    entries = [
        LedgerEntry(
            round=1,
            mechanism="dpsgd",
            noise_multiplier=z,
            sampling="poisson",
            sampling_rate=q,
            steps=s,
            clients=("c",),
        )  # fmt: skip
        for z, q, s in rounds
    ]
    assert spent(dp, rounds) == pytest.approx(epsilon(entries, 1e-5).epsilon)


def test_check_budget_refuses_the_round_that_would_cross_it() -> None:
    dp = SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, epsilon=2.0)
    step = (1.0, 0.05, 8)
    history: tuple = ()
    while True:
        try:
            check_budget(dp, history, step)
        except ValueError as exc:
            assert str(exc).startswith(BUDGET_EXHAUSTED)
            assert "> 2" in str(exc)
            break
        history = (*history, step)
        assert len(history) < 100
    assert history and spent(dp, history) <= 2.0 < spent(dp, (*history, step))
    check_budget(SampleDP(noise_multiplier=1.0, max_grad_norm=1.0), history * 10, step)


def test_run_client_keeps_the_history_in_its_state() -> None:
    from fedlake.aggregators.mean import weighted_mean
    from fedlake.client.local import ClientTask, run_client
    from fedlake.core.algorithm import Algorithm
    from fedlake.core.transform import identity
    from fedlake.data.base import ClientDataset, InMemoryClientData
    from fedlake.scenarios import build_trainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    data = InMemoryClientData({"c": ClientDataset(x, y, x[:5], y[:5])})
    trainer = build_trainer({"kind": "mlp", "input_shape": [8], "num_classes": 3, "hidden": [4]})
    dp = SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, secure_noise=False, epsilon=50.0)
    algo = Algorithm(
        name="t",
        local=LocalConfig(epochs=1, batch_size=10, lr=0.1, dp=dp),
        aggregator=weighted_mean(),
        server=identity(),
    )
    params = trainer.init_params(0)
    task = ClientTask(round=0, attempt=0, params=params, seed=0)
    first = run_client(task, "c", data, trainer, algo)
    assert first.client_state[DP_HISTORY] == ((1.0, 0.25, 4),)
    again = ClientTask(round=1, attempt=0, params=params, seed=0, states={"c": first.client_state})
    second = run_client(again, "c", data, trainer, algo)
    assert second.client_state[DP_HISTORY] == ((1.0, 0.25, 4),) * 2
    assert second.metrics["dp_steps"] == 4.0


def test_bad_budget_values_are_refused() -> None:
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, epsilon=0.0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1.0)
