"""A client's local training hyperparameters: epochs, batch size, lr, DP-SGD, a step cap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

__all__ = ["LocalConfig", "SampleDP"]


@dataclass(frozen=True)
class SampleDP:
    """Sample-level DP-SGD inside local training: noise multiplier z and per-example clip C.

    ``secure_noise=False`` draws seeded, reproducible noise: simulations only.
    """

    noise_multiplier: float
    max_grad_norm: float
    secure_noise: bool = True
    epsilon: float | None = None  # the client's own budget (None: no cap)
    delta: float = 1e-5
    accountant: str = "pld"

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "max_grad_norm"):
            value = getattr(self, name)
            real = isinstance(value, Real) and not isinstance(value, bool)
            if not (real and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number in (0, inf), got {value!r}")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")


@dataclass(frozen=True)
class LocalConfig:
    """Hyperparameters of one client's local training in a round (``dp``: DP-SGD, torch only).

    ``max_steps`` caps the local steps (a straggler's partial work): training stops after
    that many minibatch steps even mid-epoch; None runs every epoch to the end.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    dp: SampleDP | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"local epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"client lr must be > 0, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None: no cap), got {self.max_steps}")
