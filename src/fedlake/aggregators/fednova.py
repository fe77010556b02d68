"""FedNova: normalised averaging of clients that ran different numbers of local steps.

Wang, Liu, Liang, Joshi and Poor, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization", NeurIPS 2020.

Client ``i`` (weight ``p_i``, delta ``Δ_i``) reports ``metrics["steps"] = τ_i``. Its
local solver's ``a_i`` vector has norm ``a_i = τ_i`` for plain SGD, and
``a_i = (1 - (1 - η μ)^τ_i) / (η μ)`` with a FedProx proximal term ``μ`` and client lr
``η``. The aggregate is ``τ_eff * d`` with ``d = Σ p_i Δ_i / a_i / Σ p_i`` and
``τ_eff = Σ p_i a_i / Σ p_i``: each delta is normalised by its own progress, then the
cohort moves by the average progress, so stragglers no longer bias the objective.

Linear in the deltas, so it streams in O(d) memory. When every ``a_i`` is equal the
result is exactly the weighted mean (same operations, factor 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlake.aggregators._matrix import scaled_add, weighted_rows
from fedlake.core.aggregator import Aggregator, Fold, FoldAccumulator, cohort_deltas
from fedlake.core.checks import check_positive
from fedlake.core.update import ClientUpdate, finite_number

STEPS = "steps"


def reported_steps(update: ClientUpdate) -> float:
    """The client's ``metrics["steps"]`` (τ_i), or a ValueError naming the client."""
    raw = update.metrics.get(STEPS)
    steps = finite_number(raw)
    if steps is None or steps <= 0:
        raise ValueError(
            f"fednova needs a positive finite metrics[{STEPS!r}] from client "
            f"{update.client_id!r}, got {raw!r}"
        )
    return steps


def norm_a(steps: float, *, client_lr: float, mu: float) -> float:
    """``a_i``: ``τ`` for plain SGD, ``(1 - (1 - η μ)^τ) / (η μ)`` with a proximal term."""
    decay = client_lr * mu
    if decay == 0:
        return float(steps)
    # -expm1(τ log1p(-ημ)) = 1 - (1 - ημ)^τ without cancellation when ημ is small
    return -math.expm1(steps * math.log1p(-decay)) / decay


@dataclass
class NovaAccumulator(FoldAccumulator):
    """The weighted sum of ``(a_ref / a_i) p_i Δ_i`` plus ``Σ p_i a_i`` and ``a_ref``."""

    progress: float = 0.0  # Σ p_i a_i
    reference: float = 0.0  # a_ref: the first client's a_i (0 before any)
    uniform: bool = True  # every a_i so far equals a_ref


def fednova(*, client_lr: float = 0.1, mu: float = 0.0) -> Aggregator:
    """FedNova's normalised average (Wang et al., NeurIPS 2020) of ``weight``-weighted deltas.

    Args:
        client_lr: the clients' learning rate η (used only when ``mu > 0``).
        mu: the FedProx proximal coefficient μ the clients trained with (0: plain SGD).

    Raises:
        ValueError: ``client_lr`` not > 0, ``mu`` not >= 0, or ``client_lr * mu >= 1``
            (local steps that no longer contract); when aggregating, an update without a
            positive finite ``metrics["steps"]``.
    """
    eta = check_positive("client_lr", client_lr)
    prox = finite_number(mu)
    if prox is None or prox < 0:
        raise ValueError(f"mu must be a finite number >= 0, got {mu!r}")
    if not eta * prox < 1:
        raise ValueError(
            f"client_lr * mu must be < 1 for FedNova's proximal a_i, "
            f"got {eta} * {prox} = {eta * prox}"
        )

    def a_of(u: ClientUpdate) -> float:
        return norm_a(reported_steps(u), client_lr=eta, mu=prox)

    def scaled(
        total: np.ndarray, weight: float, progress: float, ref: float, uniform: bool
    ) -> np.ndarray:
        if weight <= 0:
            raise ValueError(f"total weight must be > 0, got {weight}")
        mean = total / weight
        if not uniform:  # τ_eff / a_ref; exactly 1 (skipped) when every a_i is equal
            mean = mean * ((progress / weight) / ref)
        return mean.astype(np.float32)

    def init(dim: int) -> None:
        return None

    def aggregate(updates: Sequence[ClientUpdate], state: None) -> tuple[np.ndarray, None]:
        rows = cohort_deltas(updates)
        p = np.array([float(u.weight) for u in updates], dtype=np.float64)
        a = np.array([a_of(u) for u in updates], dtype=np.float64)
        ref = float(a[0])
        uniform = bool((a == ref).all())
        w = p if uniform else p * (ref / a)
        total = weighted_rows(rows, w)
        return scaled(total, float(p.sum()), float(p @ a), ref, uniform), state

    def start(dim: int) -> FoldAccumulator:
        return NovaAccumulator(total=np.zeros(dim, dtype=np.float64))

    def add(acc: FoldAccumulator, u: ClientUpdate) -> FoldAccumulator:
        if not isinstance(acc, NovaAccumulator):
            raise TypeError(f"fednova folds into its own accumulator, got {type(acc).__name__}")
        a, p = a_of(u), float(u.weight)
        if acc.count == 0:
            acc.reference = a
        acc.uniform = acc.uniform and a == acc.reference
        w = p if a == acc.reference else p * (acc.reference / a)
        # In place, no temporary of size d: memory stays O(d) however many clients stream.
        scaled_add(acc.total, w, u.delta)
        acc.weight += p
        acc.progress += p * a
        acc.count += 1
        return acc

    def result(acc: FoldAccumulator, state: None) -> tuple[np.ndarray, None]:
        if not isinstance(acc, NovaAccumulator) or acc.count == 0:
            raise ValueError("cannot aggregate an empty cohort")
        return scaled(acc.total, acc.weight, acc.progress, acc.reference, acc.uniform), state

    def merge(acc: FoldAccumulator, other: FoldAccumulator) -> FoldAccumulator:
        if not isinstance(acc, NovaAccumulator) or not isinstance(other, NovaAccumulator):
            raise TypeError("fednova merges its own accumulators")
        if other.count == 0:
            return acc
        if acc.count == 0:
            acc.reference, acc.uniform = other.reference, other.uniform
        # other's sum is relative to its own reference a_ref': rescale to ours
        ratio = acc.reference / other.reference
        acc.total += other.total if ratio == 1.0 else ratio * other.total
        acc.uniform = acc.uniform and other.uniform and other.reference == acc.reference
        acc.weight += other.weight
        acc.progress += other.progress
        acc.count += other.count
        return acc

    fold = Fold(start, add, result, merge)
    return Aggregator(init, aggregate, linear=True, name="fednova", fold=fold)
