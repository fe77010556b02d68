"""Vectorised cohort training: many clients' local SGD from one start, one step for all at once.

:func:`fit_cohort` trains a cohort the way a loop of ``trainer.fit`` calls would (same
minibatches, same results to float tolerance, each client's ``rng`` left in the same state)
but shares each step's Python overhead among all clients still training. It returns None
where a trainer, config or transform cannot be vectorised, and the caller then loops.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedlake.client.logreg import LogRegTrainer
from fedlake.client.schedule import CohortFit, CohortSchedule, draw_schedule, stacked_update
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Affine, Transform

__all__ = [
    "CohortFit",
    "CohortSchedule",
    "draw_schedule",
    "fit_cohort",
    "stacked_update",
]


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
