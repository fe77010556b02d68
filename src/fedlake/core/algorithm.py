"""An FL algorithm is data: (local config, local_step, upload, aggregator, server)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING

from fedlake.core.aggregator import Aggregator
from fedlake.core.codec import Compression
from fedlake.core.transform import Transform, identity

if TYPE_CHECKING:  # personal.py builds on LocalConfig
    from fedlake.core.personal import Personalization


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


@dataclass(frozen=True)
class Algorithm:
    """What clients and server compute; how it runs is the executor's business.

    Args:
        name: recipe name, for logs.
        local: local training hyperparameters.
        aggregator: turns the cohort's deltas into one vector.
        server: server optimiser applied to the aggregated delta (a pseudo-gradient
            pointing towards the clients); the result is added to the params.
        local_step: transform applied to every local minibatch gradient (None: plain SGD,
            which lets trainers skip the per-step numpy round trip).
        upload: transform applied to the client delta before it is sent.
        compression: codecs of both directions, error feedback and pruning
            (default: float32 both ways).
        private_reports: clients report nothing computed from their data but the noised
            update (weight 1, no loss, count or timing): local DP's untrusted server.
        scaffold: SCAFFOLD's control variates (Karimireddy et al., ICML 2020): the server
            ships its control ``c`` with the model, each client corrects every gradient by
            ``c - c_i``, keeps its own ``c_i`` (option II) and uploads ``Delta c_i``; the
            server moves ``c`` by ``|S|/N`` times their mean (weighted like the deltas).
        personal: what clients personalise (fine-tuning, FedPer layers, Ditto), None: nothing.
    """

    name: str
    local: LocalConfig
    aggregator: Aggregator
    server: Transform
    local_step: Transform | None = None
    upload: Transform = field(default_factory=identity)
    compression: Compression = field(default_factory=Compression)
    private_reports: bool = False  # local DP: clients send weight 1 and no metrics
    scaffold: bool = False
    personal: Personalization | None = None
