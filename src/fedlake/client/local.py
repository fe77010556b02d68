"""What one client does in a round: load data, train locally, send back a delta."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from fedlake.client.trainer import Trainer
from fedlake.core.algorithm import Algorithm
from fedlake.core.state import round_rng
from fedlake.core.update import DELTA, ClientUpdate
from fedlake.data.base import ClientData

CLIENT_RNG = 3  # purpose tag of client-side generators


def client_key(client_id: str) -> int:
    """A stable integer for a client id (Python's hash() is salted per process)."""
    return zlib.crc32(client_id.encode("utf-8"))


@dataclass(frozen=True)
class ClientTask:
    """What the server ships to every client of a round."""

    round: int
    attempt: int
    params: np.ndarray
    seed: int


@dataclass(frozen=True)
class ClientFailure:
    """A client that returned nothing (crash, lost connection, data error)."""

    client_id: str
    reason: str


ClientResult = ClientUpdate | ClientFailure


@dataclass(frozen=True)
class ClientJob:
    """Everything a worker needs to run clients; picklable for spawn-based pools.

    ``make_algorithm`` is a picklable zero-argument factory (e.g. a
    ``functools.partial`` of a recipe) because transforms are closures; the
    algorithm is built once per job object, on first use, in each process.
    """

    data: ClientData
    trainer: Trainer
    make_algorithm: Callable[[], Algorithm]

    @cached_property
    def algorithm(self) -> Algorithm:
        """The recipe, built once per job object (it lives on the object, never in a global)."""
        return self.make_algorithm()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("algorithm", None)  # closures do not pickle; each process rebuilds its own
        return state

    def run(self, task: ClientTask, client_id: str) -> ClientResult:
        """Run one client, turning any exception into a ClientFailure."""
        try:
            return run_client(task, client_id, self.data, self.trainer, self.algorithm)
        except Exception as exc:  # a client's failure must never stop the round
            return ClientFailure(client_id, f"{type(exc).__name__}: {exc}")


def run_client(
    task: ClientTask, client_id: str, data: ClientData, trainer: Trainer, algorithm: Algorithm
) -> ClientUpdate:
    """Train ``client_id`` from the task's global params and return its processed delta."""
    t0 = time.perf_counter()
    rng = round_rng(task.seed, task.round, CLIENT_RNG, task.attempt, client_key(client_id))
    ds = data.load(client_id)
    if ds.num_train == 0:
        raise ValueError(f"client {client_id!r} has no training examples")
    global_params = np.asarray(task.params, dtype=np.float32)
    fit = trainer.fit(
        global_params,
        ds.x_train,
        ds.y_train,
        config=algorithm.local,
        rng=rng,
        grad_transform=algorithm.local_step,
    )
    local = np.asarray(fit.params)
    if local.shape == global_params.shape:
        delta = local.astype(np.float32) - global_params
        upload_state = algorithm.upload.init(global_params)
        delta, _ = algorithm.upload.update(delta, upload_state, params=global_params, rng=rng)
    else:  # sent as is, so the server rejects it with the reason (subtracting would broadcast)
        delta = local
    return ClientUpdate(
        client_id=client_id,
        vectors={DELTA: np.ascontiguousarray(delta)},
        weight=float(fit.num_examples),
        metrics={
            "train_loss": float(fit.loss),
            "num_examples": float(fit.num_examples),
            "steps": float(fit.steps),
            "duration_s": time.perf_counter() - t0,
        },
    )
