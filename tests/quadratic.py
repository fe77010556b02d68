"""Quadratic toy clients: f_i(x) = 0.5 (x - c_i)^T A_i (x - c_i), trained by exact gradient descent.

A client's rows carry its objective: ``d`` rows of ``A_i`` (label 0), one row ``c_i``
(label 1) and optional padding rows (label 2) that only change its example count. One
local "epoch" is one full-batch gradient step (with ``batch_size >= rows``), so a recipe's
``local_epochs`` is the number of steps K and ``config.max_steps`` caps it.
"""

from __future__ import annotations

import numpy as np

from fedlake.core.params import ParamSpec
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform
from fedlake.data.base import ClientDataset, InMemoryClientData

A_ROW, C_ROW, PAD_ROW = 0, 1, 2


class QuadraticTrainer:
    """Exact gradient descent on one client's quadratic (params ``x`` of length ``dim``)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._spec = ParamSpec.from_arrays({"x": np.zeros(dim, np.float32)})

    @property
    def spec(self) -> ParamSpec:
        return self._spec

    def init_params(self, seed: int) -> np.ndarray:
        return np.zeros(self.dim, np.float32)

    def blocks(self, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every (A, c) held in rows ``x`` (one per client block, concatenations too)."""
        x64 = np.asarray(x, np.float64)
        return [(x64[i - self.dim : i], x64[i]) for i in np.flatnonzero(np.asarray(y) == C_ROW)]

    def fit(
        self,
        params: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        *,
        config: LocalConfig,
        rng: np.random.Generator,
        grad_transform: Transform | None = None,
    ) -> FitResult:
        ((a, c),) = self.blocks(x, y)
        p = np.asarray(params, np.float64)
        steps = config.epochs if config.max_steps is None else min(config.epochs, config.max_steps)
        state = grad_transform.init(np.asarray(params, np.float32)) if grad_transform else None
        for _ in range(steps):
            g = a @ (p - c)
            if grad_transform is not None:
                g, state = grad_transform.update(g, state, params=p, rng=rng)
            p = p - config.lr * np.asarray(g, np.float64)
        loss = 0.5 * float((p - c) @ a @ (p - c))
        return FitResult(params=p.astype(np.float32), loss=loss, num_examples=len(y), steps=steps)

    def predict(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        n = len(x)
        return np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (n, 1))

    def evaluate(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        p = np.asarray(params, np.float64)
        losses = [0.5 * float((p - c) @ a @ (p - c)) for a, c in self.blocks(x, y)]
        loss = float(np.mean(losses))
        return {"loss": loss, "accuracy": 1.0 / (1.0 + loss), "examples": float(len(losses))}


def client_dataset(a: np.ndarray, c: np.ndarray, *, examples: int | None = None) -> ClientDataset:
    """One client holding (A, c); ``examples`` rows in all (default: the d + 1 needed)."""
    d = len(c)
    n = d + 1 if examples is None else examples
    if n < d + 1:
        raise ValueError(f"a quadratic client needs at least {d + 1} rows, got {n}")
    x = np.zeros((n, d), np.float32)
    x[:d], x[d:] = a, c
    y = np.full(n, PAD_ROW, np.int64)
    y[:d], y[d] = A_ROW, C_ROW
    return ClientDataset(x, y, x.copy(), y.copy())


def quadratic_data(
    problems: dict[str, tuple[np.ndarray, np.ndarray]], examples: dict[str, int] | None = None
) -> InMemoryClientData:
    """Clients ``{id: (A_i, c_i)}`` (padded to ``examples[id]`` rows where given)."""
    examples = examples or {}
    return InMemoryClientData(
        {cid: client_dataset(a, c, examples=examples.get(cid)) for cid, (a, c) in problems.items()}
    )


def random_problems(
    num_clients: int, dim: int, *, seed: int, low: float = 0.5, high: float = 3.0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``num_clients`` SPD ``A_i`` (eigenvalues in [low, high]) and centres ``c_i``, seeded.

    Entries are float32-exact so the test's float64 algebra sees the clients' numbers.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(num_clients):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        a = (q * rng.uniform(low, high, dim)) @ q.T
        a = ((a + a.T) / 2).astype(np.float32).astype(np.float64)
        c = rng.normal(0.0, 2.0, dim).astype(np.float32).astype(np.float64)
        out[f"q{i}"] = (a, c)
    return out
