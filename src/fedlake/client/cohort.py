"""Vectorised cohort training: many clients' local SGD from one start, one step for all at once.

:func:`fit_cohort` trains a cohort the way a loop of ``trainer.fit`` calls would (same
minibatches, same results to float tolerance, each client's ``rng`` left in the same state)
but shares each step's Python overhead among all clients still training. It returns None
where a trainer, config or transform cannot be vectorised, and the caller then loops.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from fedlake.client.logreg import LogRegTrainer, total_steps
from fedlake.core.params import FLOAT
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Affine, Transform

__all__ = [
    "CohortFit",
    "CohortSchedule",
    "draw_schedule",
    "fit_cohort",
    "stacked_update",
]


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


def fit_cohort(
    trainer: Any,
    params: np.ndarray,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    config: LocalConfig,
    rngs: Sequence[np.random.Generator],
    max_steps: Sequence[int | None] | None = None,
    grad_transform: Transform | None = None,
) -> list[FitResult] | None:
    """Train a cohort at once from the same start ``params`` (d,), one ``(x, y)`` per client.

    Result ``i`` matches ``trainer.fit(params, *data[i], config=replace(config,
    max_steps=max_steps[i]), rng=rngs[i], grad_transform=grad_transform)`` to float
    tolerance, and leaves ``rngs[i]`` as that call would. ``max_steps[i]`` overrides
    ``config.max_steps`` (None there: every epoch). A ``grad_transform`` must be
    ``stacked``: it is initialised once with the stacked start params (m, d) and updated
    with the stacked gradients and params (rows of clients that finished are stale and
    ignored), with ``rng=rngs[0]``.

    Returns:
        One FitResult per client, or None when this trainer, config or transform cannot be
        vectorised (DP-SGD, a non-stacked transform, an unsupported trainer or model): the
        caller falls back to per-client ``fit``; nothing was drawn from ``rngs`` then.

    Raises:
        ValueError: mismatched lengths, or invalid params or data (as ``fit`` would).
    """
    m = len(data)
    if len(rngs) != m:
        raise ValueError(f"rngs must hold one generator per client ({m}), got {len(rngs)}")
    if max_steps is not None and len(max_steps) != m:
        raise ValueError(f"max_steps must hold one entry per client ({m}), got {len(max_steps)}")
    caps = [config.max_steps] * m if max_steps is None else list(max_steps)
    configs = [replace(config, max_steps=cap) for cap in caps]  # validates each cap
    if config.dp is not None or (grad_transform is not None and not grad_transform.stacked):
        return None
    affine = None if grad_transform is None else grad_transform.affine
    fitter = _fitter_for(trainer, compilable=grad_transform is None or affine is not None)
    if fitter is None:
        return None
    if m == 0:
        return []
    return fitter(trainer, params, data, configs=configs, rngs=rngs, grad_transform=grad_transform)


def _fitter_for(trainer: Any, *, compilable: bool) -> CohortFit | None:
    if isinstance(trainer, LogRegTrainer):
        from fedlake.client import logreg_kernel

        if logreg_kernel.AVAILABLE and compilable:  # compiled, one client per core
            return _compiled_logreg_cohort
        from fedlake.client.logreg_cohort import fit_logreg_cohort

        return fit_logreg_cohort
    # a TorchTrainer exists only once its module (and so torch) was imported: never import here
    torch_adapter = sys.modules.get("fedlake.client.torch_adapter")
    if torch_adapter is not None and isinstance(trainer, torch_adapter.TorchTrainer):
        from fedlake.client.torch_cohort import fit_torch_cohort

        return fit_torch_cohort
    return None


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


def _compiled_logreg_cohort(
    trainer: LogRegTrainer,
    params: np.ndarray,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    configs: Sequence[LocalConfig],
    rngs: Sequence[np.random.Generator],
    grad_transform: Transform | None,
) -> list[FitResult]:
    """Logistic regression with no or an affine local step: each client's compiled loop (the
    same as its ``fit``), all clients' loops spread over the cores (they release the GIL)."""
    from fedlake.client import logreg_kernel

    step = Affine() if grad_transform is None else grad_transform.affine
    assert step is not None
    jobs = []
    for i, ((x, y), config, rng) in enumerate(zip(data, configs, rngs, strict=True)):
        own = Affine(step.mu, _row(step.anchor, i), _row(step.offset, i))  # this client's
        jobs.append(trainer.compiled_job(params, x, y, config, rng, affine=own))
    return logreg_kernel.run_many(jobs)


def _row(vec: np.ndarray | None, i: int) -> np.ndarray | None:
    """Client ``i``'s row of a stacked (m, d) vector; a (d,) vector is everyone's."""
    if vec is None or np.ndim(vec) == 1:
        return vec
    return np.asarray(vec)[i]
