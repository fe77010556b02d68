"""ClientJob: one client's round, its algorithm built once per job, picklable for workers."""

import functools
import pickle

import numpy as np
from toy import ToyTrainer, decoded, toy_data

from fedlake.algorithms.fedavg import fedavg
from fedlake.client.local import ClientJob, ClientTask

DATA = toy_data({"a": ((2.0, 0.0), 4)})


def one_step(lr):
    job = ClientJob(DATA, ToyTrainer(), functools.partial(fedavg, client_lr=lr))
    task = ClientTask(round=0, attempt=0, params=np.zeros(2, np.float32), seed=0)
    return decoded(job.run(task, "a")).delta


def test_each_job_uses_its_own_algorithm_even_when_ids_are_reused():
    # Jobs created and freed in turn often get the same id(): a cache keyed on it went stale.
    for i in range(50):
        lr = (0.25, 0.5)[i % 2]
        np.testing.assert_allclose(one_step(lr), [2.0 * lr, 0.0])


def test_pickled_job_rebuilds_its_algorithm():
    job = ClientJob(DATA, ToyTrainer(), functools.partial(fedavg, client_lr=0.5))
    assert job.algorithm is job.algorithm  # built once
    clone = pickle.loads(pickle.dumps(job))
    assert "algorithm" not in clone.__dict__
    assert clone.algorithm.local.lr == 0.5
