"""Golden numbers for one FedAvg server round on two toy clients."""

import numpy as np
import pytest
from toy import ToyTrainer, toy_data

from fedlake.algorithms.fedavg import fedavg
from fedlake.client.runtime import ClientRuntime
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.state import init_server_state, server_round, task_extras
from fedlake.core.task import ClientReply, ClientTask
from fedlake.core.update import ClientUpdate


def two_clients():
    return toy_data({"a": ((1.0, 0.0), 1), "b": ((0.0, 4.0), 3)})


def updates_for(algo, state):
    data, trainer = two_clients(), ToyTrainer()
    model = encode_model(state.params, None, algo.compression.download, np.random.default_rng(0))
    task = ClientTask(
        round=state.round,
        attempt=0,
        seed=state.seed,
        model=model,
        extras=task_extras(algo, state),
    )
    runtime = ClientRuntime(data, trainer, algo)
    replies = [runtime.handle(task, cid) for cid in ("a", "b")]
    assert all(isinstance(r, ClientReply) for r in replies), replies
    return [decode_reply(r, state.dim, None, algo.compression.upload) for r in replies]


def test_fedavg_golden_round():
    algo = fedavg(client_lr=0.5, local_epochs=1, batch_size=1)
    state = init_server_state(algo, np.zeros(2, np.float32), seed=0)
    ups = updates_for(algo, state)
    np.testing.assert_array_equal(ups[0].delta, [0.5, 0.0])
    np.testing.assert_array_equal(ups[1].delta, [0.0, 2.0])
    assert [u.weight for u in ups] == [1.0, 3.0]
    new, metrics = server_round(algo, state, ups)
    np.testing.assert_array_equal(new.params, np.array([0.125, 1.5], np.float32))
    assert new.round == 1 and metrics["num_updates"] == 2 and metrics["total_weight"] == 4
    assert state.round == 0 and np.all(state.params == 0)  # inputs untouched


def test_server_lr_and_local_epochs():
    algo = fedavg(client_lr=0.5, local_epochs=2, server_lr=2.0)
    state = init_server_state(algo, np.zeros(2, np.float32), seed=0)
    new, _ = server_round(algo, state, updates_for(algo, state))
    # two epochs: a -> 0.75, b -> 3.0; weighted mean (0.1875, 2.25); times server lr 2
    np.testing.assert_allclose(new.params, [0.375, 4.5])


def test_two_rounds_converge_toward_weighted_optimum():
    algo = fedavg(client_lr=1.0)
    state = init_server_state(algo, np.zeros(2, np.float32), seed=0)
    for _ in range(2):
        state, _ = server_round(algo, state, updates_for(algo, state))
    np.testing.assert_allclose(state.params, [0.25, 3.0])


def test_server_round_refuses_bad_updates():
    algo = fedavg()
    state = init_server_state(algo, np.zeros(2, np.float32), seed=0)
    bad = ClientUpdate("x", {"delta": np.array([np.nan, 0], np.float32)}, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        server_round(algo, state, [bad])
    with pytest.raises(ValueError, match="at least one|empty"):
        server_round(algo, state, [])


def test_params_are_read_only():
    algo = fedavg()
    state = init_server_state(algo, np.zeros(2, np.float32), seed=0)
    with pytest.raises(ValueError):
        state.params[0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"client_lr": 0}, "client lr"),
        ({"local_epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"server_lr": -1}, "server lr"),
    ],
)
def test_fedavg_validates_hyperparameters(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        fedavg(**kwargs)
