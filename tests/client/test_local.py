"""ClientFleet: one process's clients, its algorithm built once per fleet, picklable for workers."""

import functools
import pickle

import numpy as np
from toy import ToyTrainer, toy_data

from fedlake.algorithms.fedavg import fedavg
from fedlake.client.fleet import ClientFleet
from fedlake.client.stores import MemoryStateStore
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.task import ClientReply, ClientTask

DATA = toy_data({"a": ((2.0, 0.0), 4)})


def one_step(lr):
    fleet = ClientFleet(DATA, ToyTrainer(), functools.partial(fedavg, client_lr=lr))
    model = encode_model(np.zeros(2, np.float32), None, None, np.random.default_rng(0))
    task = ClientTask(round=0, attempt=0, seed=0, model=model)
    reply = fleet.runtime(MemoryStateStore()).handle(task, "a")
    assert isinstance(reply, ClientReply), reply
    return decode_reply(reply, 2, None, None).delta


def test_each_fleet_uses_its_own_algorithm_even_when_ids_are_reused():
    # Fleets created and freed in turn often get the same id(): a cache keyed on it went stale.
    for i in range(50):
        lr = (0.25, 0.5)[i % 2]
        np.testing.assert_allclose(one_step(lr), [2.0 * lr, 0.0])


def test_pickled_fleet_rebuilds_its_algorithm():
    fleet = ClientFleet(DATA, ToyTrainer(), functools.partial(fedavg, client_lr=0.5))
    assert fleet.algorithm is fleet.algorithm  # built once
    clone = pickle.loads(pickle.dumps(fleet))
    assert "algorithm" not in clone.__dict__
    assert clone.algorithm.local.lr == 0.5
