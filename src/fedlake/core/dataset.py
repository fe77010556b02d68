"""One client's local data: the arrays a client trains and is evaluated on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClientDataset"]


@dataclass(frozen=True)
class ClientDataset:
    """One client's local data: features ``x`` (n, ...) float32 and integer labels ``y`` (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(len(self.y_train))

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(len(self.y_test))
