"""What every cohort fitter shares: the fit protocol, the drawn minibatch schedule, stacked steps.

:mod:`fedlake.client.logreg_cohort` and :mod:`fedlake.client.torch_cohort` build on these;
:func:`fedlake.client.cohort.fit_cohort` picks one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedlake.client.logreg import total_steps
from fedlake.core.params import FLOAT
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform

__all__ = ["CohortFit", "CohortSchedule", "draw_schedule", "stacked_update"]


class CohortFit(Protocol):
    """A trainer family's vectorised fit: per-client ``configs`` differ only in ``max_steps``.

    Returns None when this trainer or config cannot be vectorised; then it must not have
    drawn from any ``rngs``.
    """

    def __call__(
        self,
        trainer: Any,
        params: np.ndarray,
        data: Sequence[tuple[np.ndarray, np.ndarray]],
        *,
        configs: Sequence[LocalConfig],
        rngs: Sequence[np.random.Generator],
        grad_transform: Transform | None,
    ) -> list[FitResult] | None: ...


@dataclass(frozen=True)
class CohortSchedule:
    """Every client's minibatches, from permutations drawn up front; clients sorted by steps.

    Sorted position ``j`` is client ``order[j]``; clients are sorted by their step counts,
    most first, so the clients still training at step ``t`` are the prefix ``[0, active(t))``.
    ``rows`` holds, per sorted client, its epochs' permutations one after another, as
    indices into the clients' data concatenated in the original order.
    """

    order: np.ndarray
    n: np.ndarray
    steps: np.ndarray
    per_epoch: np.ndarray
    base: np.ndarray
    rows: np.ndarray
    batch_size: int

    @property
    def sorted_identity(self) -> bool:
        """Whether sorting left the clients in their original order."""
        return bool(np.array_equal(self.order, np.arange(len(self.order))))

    def results(self, stack: np.ndarray, totals: np.ndarray) -> list[FitResult]:
        """Each client's FitResult, in the original order, from the sorted stacked rows."""
        out: dict[int, FitResult] = {}
        for j, i in enumerate(self.order):
            steps = int(self.steps[j])
            out[int(i)] = FitResult(
                params=np.array(stack[j], dtype=FLOAT),
                loss=float(totals[j] / steps),
                num_examples=int(self.n[j]),
                steps=steps,
            )
        return [out[i] for i in range(len(self.order))]

    def active(self, t: int) -> int:
        """How many clients take a step ``t`` (0-based): a prefix of the sorted clients."""
        return int(np.count_nonzero(self.steps > t))

    def batch(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step ``t``'s rows ``(a, B)`` of the ``a`` active clients, their mask and counts.

        Rows past a client's (ragged or short) batch repeat its first row, masked out.
        """
        a, bsz = self.active(t), self.batch_size
        per_epoch = self.per_epoch[:a]
        epoch = t // per_epoch
        within = (t - epoch * per_epoch) * bsz
        start = self.base[:a] + epoch * self.n[:a] + within
        counts = np.minimum(bsz, self.n[:a] - within)
        cols = np.arange(bsz)
        mask = cols < counts[:, None]
        pos = np.where(mask, start[:, None] + cols, start[:, None])
        return self.rows[pos], mask, counts


def draw_schedule(
    sizes: Sequence[int],
    configs: Sequence[LocalConfig],
    rngs: Sequence[np.random.Generator],
    *,
    seed_draw: bool = False,
) -> CohortSchedule:
    """Draw each client's permutations from its own rng, exactly as its ``fit`` would.

    ``seed_draw`` first draws (and drops) the ``rng.integers(2**63 - 1)`` torch seed that
    ``TorchTrainer.fit`` takes. One permutation per epoch begun, nothing more.
    """
    bsz = int(configs[0].batch_size)
    n = np.asarray(sizes, dtype=np.int64)
    steps = np.array([total_steps(int(k), c) for k, c in zip(n, configs, strict=True)])
    per_epoch = -(-n // bsz)
    offsets = np.concatenate(([0], np.cumsum(n)[:-1]))
    perms: list[np.ndarray] = []
    for k, s, e, off, rng in zip(n, steps, per_epoch, offsets, rngs, strict=True):
        if seed_draw:
            rng.integers(2**63 - 1)
        begun = -(-int(s) // int(e))
        perms.append(np.concatenate([rng.permutation(int(k)) for _ in range(begun)]) + off)
    order = np.argsort(-steps, kind="stable")
    lengths = np.array([len(perms[i]) for i in order], dtype=np.int64)
    return CohortSchedule(
        order=order,
        n=n[order],
        steps=steps[order],
        per_epoch=per_epoch[order],
        base=np.concatenate(([0], np.cumsum(lengths)[:-1])),
        rows=np.concatenate([perms[i] for i in order]),
        batch_size=bsz,
    )


def stacked_update(
    tx: Transform,
    state: Any,
    grads: np.ndarray,
    params: np.ndarray,
    schedule: CohortSchedule,
    rng: np.random.Generator,
) -> tuple[np.ndarray, Any]:
    """Apply a stacked transform to sorted (m, d) grads and params, in the original row order."""
    if schedule.sorted_identity:
        new, state = tx.update(grads, state, params=params, rng=rng)
    else:
        order = schedule.order
        g, p = np.empty_like(grads), np.empty_like(params)
        g[order], p[order] = grads, params
        new, state = tx.update(g, state, params=p, rng=rng)
        new = np.asarray(new)[order]
    new = np.asarray(new, dtype=FLOAT)
    if new.shape != grads.shape:
        raise ValueError(f"grad_transform must return shape {grads.shape}, got {new.shape}")
    return new, state
