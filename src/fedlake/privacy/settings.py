"""The resolved ``[privacy]`` settings: what a recipe needs to add its DP mechanism.

Light on purpose (no accountant): the recipe spec carries it to every client.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedlake.privacy.central import AdaptiveClip

__all__ = ["DPSettings"]


@dataclass(frozen=True)
class DPSettings:
    """The resolved DP settings of a run (picklable: workers rebuild the recipe from it)."""

    mechanism: str  # central | local | dpsgd
    noise_multiplier: float
    clip: float
    adaptive: AdaptiveClip | None
    sampling: str
    denominator: float
    seed: int
    secure_noise: bool
    epsilon: float | None = None  # DP-SGD: each client's own budget
    delta: float = 1e-5
    accountant: str = "pld"
