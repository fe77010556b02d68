"""A hand-checkable toy trainer: each client pulls params toward the mean of its rows."""

from __future__ import annotations

import numpy as np

from fedlake.core.params import ParamSpec
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform
from fedlake.data.base import ClientDataset, InMemoryClientData


class ToyTrainer:
    """Gradient descent on f(p) = 0.5 * mean ||p - x_i||^2, one full-batch step per epoch."""

    def __init__(self, dim: int = 2) -> None:
        self._spec = ParamSpec.from_arrays({"p": np.zeros(dim, np.float32)})

    @property
    def spec(self) -> ParamSpec:
        return self._spec

    def init_params(self, seed: int) -> np.ndarray:
        return np.zeros(self._spec.size, np.float32)

    def fit(
        self, params, x, y, *, config: LocalConfig, rng, grad_transform: Transform | None = None
    ):
        p = np.array(params, dtype=np.float32)
        target = x.mean(axis=0).astype(np.float32)
        state = grad_transform.init(p) if grad_transform else None
        for _ in range(config.epochs):
            g = (p - target).astype(np.float32)
            if grad_transform is not None:
                g, state = grad_transform.update(g, state, params=p, rng=rng)
            p = (p - np.float32(config.lr) * g).astype(np.float32)
        loss = float(0.5 * ((p - x) ** 2).sum(axis=1).mean())
        return FitResult(params=p, loss=loss, num_examples=len(x), steps=config.epochs)

    def predict(self, params, x):
        d = ((x - params) ** 2).sum(axis=1)
        return np.stack([1 / (1 + d), d / (1 + d)], axis=1)

    def evaluate(self, params, x, y):
        loss = float(0.5 * ((x - params) ** 2).sum(axis=1).mean())
        return {"loss": loss, "accuracy": 1.0 / (1.0 + loss), "examples": float(len(x))}


class PoisonTrainer(ToyTrainer):
    """Returns NaN params for the clients whose target's first coordinate is negative."""

    def fit(self, params, x, y, **kw):
        res = super().fit(params, x, y, **kw)
        if x[0, 0] < 0:
            return type(res)(np.full_like(res.params, np.nan), res.loss, res.num_examples, 1)
        return res


def toy_data(points: dict[str, tuple[tuple[float, ...], int]]) -> InMemoryClientData:
    """Clients whose rows are ``n`` copies of one point (train and test alike)."""
    out = {}
    for cid, (c, n) in points.items():
        x = np.tile(np.asarray(c, np.float32), (n, 1))
        y = np.zeros(n, np.int64)
        out[cid] = ClientDataset(x, y, x.copy(), y.copy())
    return InMemoryClientData(out)


def decoded(reply, dim=None, mask=None, codec=None):
    """``reply`` as the server sees it: its wire payloads decoded into an update's vectors."""
    from fedlake.compression.messages import decode_reply

    if dim is None:
        dim = _dim(reply)
    return decode_reply(reply, dim, mask, codec)


def _dim(reply):
    from fedlake.compression.wire import read_header

    header, _ = read_header(reply.payloads["delta"])
    return header.dim


def fedavg_with(aggregator=None, lr=1.0):
    """FedAvg (client lr ``lr``) with the aggregator ``aggregator`` names (picklable by name)."""
    from dataclasses import replace

    from fedlake.aggregators import build_aggregator
    from fedlake.algorithms.fedavg import fedavg

    algo = fedavg(client_lr=lr)
    if aggregator is not None:
        algo = replace(algo, aggregator=build_aggregator(aggregator))
    return algo
