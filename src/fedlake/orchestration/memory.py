"""How much memory a round's aggregation holds on the server (the driver on Spark), said
before the first round, and a cohort that cannot fit refused with that number.

A linear rule (the weighted mean, FedNova) streams: a float64 running sum, the mean and
the update being folded, whatever the cohort (with ``fold`` the executor folds and the
driver merges partial sums of the same size). A non-linear rule (Krum, median, trimmed
mean, Bulyan, the geometric median, centred clipping) needs every update of the round at
once: the cohort's float32 deltas, plus the n x n distances for the Krum family, plus
block-sized temporaries (``aggregators._matrix``: memory never grows with d beyond them).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from fedlake.aggregators._matrix import BLOCK_VALUES
from fedlake.core.aggregator import Aggregator

__all__ = ["MemoryPlan", "available_bytes", "round_memory"]

DISTANCES = ("krum", "multi_krum", "bulyan")  # rules over the n x n pairwise distances
GB = 1e9


@dataclass(frozen=True)
class MemoryPlan:
    """A round's aggregation memory on the server, and what it is made of."""

    bytes: int
    streams: bool  # linear: O(d), whatever the cohort
    detail: str

    def describe(self) -> str:
        """One line for the user."""
        return f"{self.bytes / GB:.2f} GB ({self.detail})"


def round_memory(aggregator: Aggregator, cohort: int, dim: int) -> MemoryPlan:
    """The bytes a round of ``cohort`` updates of ``dim`` weights holds while it aggregates."""
    model = 4 * dim
    if aggregator.linear and aggregator.fold is not None:
        # float64 sum, the float32 mean, one update in flight, the next round's model
        total = 2 * model + model + model + model
        return MemoryPlan(total, True, f"{aggregator.name} streams: O(model), any cohort")
    updates = cohort * model
    distances = 8 * cohort * cohort if aggregator.name in DISTANCES else 0
    blocks = 8 * BLOCK_VALUES * 4  # a few float64 column blocks of the cohort
    total = updates + distances + blocks + 2 * model
    parts = f"{cohort} updates of {model / 1e6:.1f} MB"
    if distances:
        parts += f" + {cohort}x{cohort} distances"
    return MemoryPlan(total, False, f"{aggregator.name} holds {parts}")


def available_bytes() -> int | None:
    """The memory the kernel reports as available (MemAvailable), None where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
