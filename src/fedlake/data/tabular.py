"""Real datasets shipped with scikit-learn (no download), standardised and split into clients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedlake.data.base import InMemoryClientData
from fedlake.data.partition import partition_dataset

__all__ = ["SKLEARN_DATASETS", "load_breast_cancer_xy", "load_digits_xy", "sklearn_federated"]


def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature (constant features are only centred)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def load_digits_xy() -> tuple[np.ndarray, np.ndarray]:
    """UCI optical digits (1,797 8x8 images, 10 classes): x (1797, 64) float32, y int64.

    Features are standardised over the whole dataset (a convenience for
    simulations: every client shares the same fixed preprocessing).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    return _standardise(data.data), np.asarray(data.target, dtype=np.int64)


def load_breast_cancer_xy() -> tuple[np.ndarray, np.ndarray]:
    """Wisconsin diagnostic breast cancer (569 x 30, 2 classes): x float32 standardised, y int64."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return _standardise(data.data), np.asarray(data.target, dtype=np.int64)


SKLEARN_DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "breast_cancer": load_breast_cancer_xy,
    "digits": load_digits_xy,
}


def sklearn_federated(
    name: str,
    *,
    num_clients: int,
    scheme: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> InMemoryClientData:
    """A scikit-learn dataset (``digits`` or ``breast_cancer``) split into ``num_clients`` clients.

    ``scheme`` is ``iid``, ``dirichlet`` (label skew) or ``quantity_skew``; see
    :func:`fedlake.data.partition.partition_dataset`.
    """
    if name not in SKLEARN_DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; accepted: {', '.join(sorted(SKLEARN_DATASETS))}"
        )
    if scheme == "by_column":
        raise ValueError("scheme 'by_column' needs a group column; use partition_dataset")
    x, y = SKLEARN_DATASETS[name]()
    return partition_dataset(
        x,
        y,
        scheme=scheme,
        num_clients=num_clients,
        seed=seed,
        test_fraction=test_fraction,
        alpha=alpha,
    )
