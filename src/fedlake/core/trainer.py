"""The trainer seam: how a model is initialised, trained locally and evaluated on flat params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from fedlake.core.local import LocalConfig
from fedlake.core.params import ParamSpec
from fedlake.core.transform import Transform

__all__ = ["FitResult", "LocalConfig", "Trainer"]


@dataclass(frozen=True)
class FitResult:
    """What local training returns: new flat params, scalar metrics and DP-SGD facts if any.

    ``privacy`` (DP-SGD only) holds ``noise_multiplier``, ``sampling_rate``, ``steps``,
    ``max_grad_norm`` and ``secure_noise`` (1.0 or 0.0).
    """

    params: np.ndarray
    loss: float
    num_examples: int
    steps: int
    privacy: dict[str, float] | None = None


@runtime_checkable
class Trainer(Protocol):
    """Trains and evaluates one model family on flat float32 parameter vectors.

    Implementations must be picklable (they travel to spawn workers) and
    deterministic given ``rng``.
    """

    @property
    def spec(self) -> ParamSpec:
        """Layout of the flat parameter vector."""
        ...

    def init_params(self, seed: int) -> np.ndarray:
        """Fresh float32 parameters, deterministic in ``seed``."""
        ...

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
        """Run local SGD from ``params``; ``grad_transform`` rewrites each minibatch gradient.

        ``grad_transform.update(grad, state, params=current_params, rng=rng)`` is
        called on every step; its ``init`` receives the starting params (so a
        proximal term can anchor to the global model).
        """
        ...

    def predict(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, num_classes) of ``params`` on ``x``."""
        ...

    def evaluate(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Mean loss and accuracy of ``params`` on (x, y): ``{"loss", "accuracy", "examples"}``."""
        ...
