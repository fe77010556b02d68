"""Central user-level DP: DP-FedAvg with fixed or adaptive clipping.

McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
Models", ICLR 2018: every client's delta is clipped to L2 norm ``clip``, the clipped
deltas are summed, Gaussian noise N(0, (z clip)^2) is added to the sum, and the sum is
divided by a fixed denominator (the expected cohort size), so one user changes the
result by at most ``clip / denominator`` whatever the others send.

Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021: the clip norm tracks a quantile of the update norms. Every
client also reports whether its norm was within the clip, as ``b - 1/2`` so that one user
moves the sum by at most 1/2; the server noises that sum with std ``count_noise`` and
moves the clip geometrically,
``clip <- clip * exp(-clip_lr * (noised_fraction - target_quantile))``. The two
releases together cost what one Gaussian mechanism with multiplier ``z`` costs when the
value noise uses ``z_value = (z^-2 - (2 count_noise)^-2)^(-1/2)``; that ``z`` is what the
ledger records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlake.aggregators.norm_bound import clip_update
from fedlake.core.aggregator import Aggregator, Fold, FoldAccumulator, merge_sums
from fedlake.core.checks import check_positive
from fedlake.core.state import round_rng
from fedlake.core.update import ClientUpdate
from fedlake.privacy.noise import noise_source

DP_NOISE_RNG = 11  # purpose tag of seeded DP noise (simulation only)


@dataclass(frozen=True)
class AdaptiveClip:
    """Adaptive clipping's hyperparameters (Andrew et al.'s defaults)."""

    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_noise: float | None = None  # None: max(expected clients per round / 20, z)

    def __post_init__(self) -> None:
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"target_quantile must be in (0, 1), got {self.target_quantile}")
        check_positive("clip_lr", self.clip_lr)
        if self.count_noise is not None:
            check_positive("count_noise", self.count_noise)


@dataclass(frozen=True)
class DPState:
    """What the DP aggregator carries between rounds: rounds released and the clip norm."""

    released: int
    clip: float

    def metrics(self) -> dict[str, float]:
        """Per-round numbers for the tracker."""
        return {"dp_clip": self.clip}


def value_noise_multiplier(z: float, count_noise: float) -> float:
    """Andrew et al.'s corrected value-noise multiplier for a total multiplier ``z``."""
    if not z < 2 * count_noise:
        raise ValueError(
            f"noise_multiplier ({z}) must be < 2 x the count noise std ({2 * count_noise:g}) "
            "with adaptive clipping: raise count_noise, or use a fixed clip (adaptive = false)"
        )
    return (z**-2 - (2 * count_noise) ** -2) ** -0.5


def dp_fedavg(
    *,
    clip: float,
    noise_multiplier: float,
    denominator: float,
    seed: int = 0,
    secure_noise: bool = True,
    adaptive: AdaptiveClip | None = None,
) -> Aggregator:
    """The DP-FedAvg aggregator: clip, sum, add Gaussian noise, divide by ``denominator``.

    ``clip`` is the (initial, when adaptive) L2 bound; ``denominator`` the expected
    number of clients per round. Clients count equally (bounded sensitivity needs it);
    linear, so it streams in O(d) memory.
    """
    clip0 = check_positive("clip", clip)
    z = check_positive("noise_multiplier", noise_multiplier)
    denom = check_positive("denominator", denominator)
    count_std: float = 0.0
    z_value = z
    if adaptive is not None:
        # default: Andrew et al.'s m / 20, raised to z when z is larger, so the value
        # noise grows by at most 2 / sqrt(3) (15%)
        given = adaptive.count_noise
        count_std = given if given is not None else max(denom / 20, z)
        z_value = value_noise_multiplier(z, count_std)

    def init(dim: int) -> DPState:
        return DPState(released=0, clip=clip0)

    def start(dim: int) -> FoldAccumulator:
        return FoldAccumulator(total=np.zeros(dim, dtype=np.float64))

    def add_with(bound: float, acc: FoldAccumulator, u: ClientUpdate) -> FoldAccumulator:
        delta = np.asarray(u.delta)
        norm = float(np.linalg.norm(delta.astype(np.float64)))
        acc.total += clip_update(u, bound, norm).delta
        acc.count += 1
        # adaptive's bit, centred: b - 1/2 in {-1/2, +1/2}, so one user moves the sum by
        # at most 1/2 (the sensitivity Andrew et al.'s noise split assumes)
        acc.weight += 0.5 if norm <= bound else -0.5
        return acc

    def result(acc: FoldAccumulator, state: DPState) -> tuple[np.ndarray, DPState]:
        if acc.count and acc.state is None and state.clip != clip0:
            raise ValueError(  # the fold clipped at the wrong bound: noise would not cover it
                "dp_fedavg's fold needs the round's state (FoldAccumulator.state) once the "
                "adaptive clip has moved"
            )
        rng = round_rng(seed, state.released, DP_NOISE_RNG)
        noise = noise_source(secure_noise, rng)
        total = acc.total + noise.normal(acc.total.size, z_value * state.clip)
        new_clip = state.clip
        if adaptive is not None:
            fraction = (acc.weight + float(noise.normal(1, count_std)[0])) / denom + 0.5
            new_clip = state.clip * math.exp(
                -adaptive.clip_lr * (fraction - adaptive.target_quantile)
            )
        out = (total / denom).astype(np.float32)
        return out, DPState(released=state.released + 1, clip=new_clip)

    def add(acc: FoldAccumulator, u: ClientUpdate) -> FoldAccumulator:
        bound = acc.state.clip if isinstance(acc.state, DPState) else clip0
        return add_with(bound, acc, u)

    def aggregate(updates: Sequence[ClientUpdate], state: DPState) -> tuple[np.ndarray, DPState]:
        if not updates:
            raise ValueError("cannot aggregate an empty cohort")
        acc = start(np.asarray(updates[0].delta).size)
        acc.state = state
        for u in updates:
            add_with(state.clip, acc, u)
        return result(acc, state)

    name = "dp_fedavg" + ("(adaptive)" if adaptive is not None else "")
    return Aggregator(
        init,
        aggregate,
        linear=True,
        name=name,
        fold=Fold(start, add, result, merge_sums),
        min_updates=0,  # a Poisson round is released whatever its size, even empty
    )
