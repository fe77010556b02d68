"""A DP-SGD client keeps its own history and refuses a round past its budget."""

from __future__ import annotations

import numpy as np
import pytest

from fedlake.core.algorithm import LocalConfig, SampleDP
from fedlake.core.plugin import ClientRefusal
from fedlake.plugins.dpsgd_budget import (
    BUDGET_EXHAUSTED,
    check_budget,
    planned_round,
    sampling_rate,
    spent,
    steps_per_epoch,
)
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
            assert isinstance(exc, ClientRefusal)  # a refusal, not a crash
            assert str(exc).startswith(BUDGET_EXHAUSTED)
            assert "> 2" in str(exc)
            break
        history = (*history, step)
        assert len(history) < 100
    assert history and spent(dp, history) <= 2.0 < spent(dp, (*history, step))
    check_budget(SampleDP(noise_multiplier=1.0, max_grad_norm=1.0), history * 10, step)


def test_the_runtime_keeps_the_history_in_the_clients_store() -> None:
    from fedlake.aggregators.mean import weighted_mean
    from fedlake.client.runtime import ClientRuntime
    from fedlake.client.stores import MemoryStateStore
    from fedlake.compression.messages import encode_model
    from fedlake.core.algorithm import Algorithm
    from fedlake.core.task import ClientReply, ClientTask
    from fedlake.core.transform import identity
    from fedlake.data.base import ClientDataset, InMemoryClientData
    from fedlake.plugins.dpsgd_budget import dpsgd_budget
    from fedlake.run.scenarios import build_trainer

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
        client_plugins=(dpsgd_budget(dp),),
    )
    store = MemoryStateStore()
    runtime = ClientRuntime(data, trainer, algo, store)
    model = encode_model(trainer.init_params(0), None, None, np.random.default_rng(0))
    first = runtime.handle(ClientTask(round=0, attempt=0, seed=0, model=model), "c")
    assert isinstance(first, ClientReply), first
    assert store.load("c") == {"states": {"dp_history": ((1.0, 0.25, 4),)}}
    second = runtime.handle(ClientTask(round=1, attempt=0, seed=0, model=model), "c")
    assert isinstance(second, ClientReply), second
    assert store.load("c") == {"states": {"dp_history": ((1.0, 0.25, 4),) * 2}}
    assert second.metrics["dp_steps"] == 4.0


def test_a_client_past_its_budget_refuses_through_the_runtime() -> None:
    from fedlake.aggregators.mean import weighted_mean
    from fedlake.client.runtime import ClientRuntime
    from fedlake.client.stores import MemoryStateStore
    from fedlake.compression.messages import encode_model
    from fedlake.core.algorithm import Algorithm
    from fedlake.core.task import ClientFailure, ClientTask, FailureReason
    from fedlake.core.transform import identity
    from fedlake.data.base import ClientDataset, InMemoryClientData
    from fedlake.plugins.dpsgd_budget import dpsgd_budget
    from fedlake.run.scenarios import build_trainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    data = InMemoryClientData({"c": ClientDataset(x, y, x[:5], y[:5])})
    trainer = build_trainer({"kind": "mlp", "input_shape": [8], "num_classes": 3, "hidden": [4]})
    dp = SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, secure_noise=False, epsilon=0.01)
    algo = Algorithm(
        name="t",
        local=LocalConfig(epochs=1, batch_size=10, lr=0.1, dp=dp),
        aggregator=weighted_mean(),
        server=identity(),
        client_plugins=(dpsgd_budget(dp),),
    )
    store = MemoryStateStore()
    model = encode_model(trainer.init_params(0), None, None, np.random.default_rng(0))
    out = ClientRuntime(data, trainer, algo, store).handle(
        ClientTask(round=0, attempt=0, seed=0, model=model), "c"
    )
    assert isinstance(out, ClientFailure)
    assert out.reason is FailureReason.REFUSED and out.status == "failed"
    assert out.message.startswith(BUDGET_EXHAUSTED) and "> 0.01" in out.message
    assert store.load("c") is None  # a refused round is not spent


def test_bad_budget_values_are_refused() -> None:
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, epsilon=0.0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        SampleDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1.0)
