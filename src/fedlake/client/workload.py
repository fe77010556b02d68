"""How much of its local work a client does this round: stragglers and deadlines."""

from __future__ import annotations

import math
from dataclasses import dataclass

STRAGGLER = "straggler"  # prefix of the reason of a straggler the server did not wait for


@dataclass(frozen=True)
class Workload:
    """One client's share of its local work in a round (simulation of device heterogeneity).

    Args:
        fraction: share of the configured local steps it completes, in (0, 1]
            (FedProx's stragglers run 1..E-1 of E epochs: ``e / E``).
        max_steps: steps it can finish before the round's deadline (None: no deadline).
        drop_partial: the server does not wait for partial work ("drop stragglers"):
            a client that cannot finish everything sends nothing.
    """

    fraction: float = 1.0
    max_steps: int | None = None
    drop_partial: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"work fraction must be in (0, 1], got {self.fraction}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")

    def steps(self, total: int) -> int:
        """Steps done out of ``total``: the fraction (rounded, at least one), then the deadline."""
        done = total if self.fraction >= 1 else max(1, min(total, round(self.fraction * total)))
        return done if self.max_steps is None else min(done, self.max_steps)


FULL = Workload()


def local_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    """Minibatch steps of full local training: ``epochs * ceil(n / batch_size)``."""
    return int(epochs) * math.ceil(int(num_examples) / int(batch_size))
