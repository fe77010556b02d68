"""An FL algorithm is data: (local config, local_step, upload, aggregator, server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedlake.core.aggregator import Aggregator
from fedlake.core.codec import Compression
from fedlake.core.transform import Transform, identity


@dataclass(frozen=True)
class LocalConfig:
    """Hyperparameters of one client's local training in a round."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"local epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"client lr must be > 0, got {self.lr}")


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
    """

    name: str
    local: LocalConfig
    aggregator: Aggregator
    server: Transform
    local_step: Transform | None = None
    upload: Transform = field(default_factory=identity)
    compression: Compression = field(default_factory=Compression)
