"""Vectorised local SGD of a cohort of :class:`LogRegTrainer` clients (numpy, batched matmul)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedlake.client.logreg import LogRegTrainer
from fedlake.client.schedule import draw_schedule, stacked_update
from fedlake.core.params import FLOAT
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform

__all__ = ["fit_logreg_cohort", "stacked_loss_and_grad"]


def stacked_loss_and_grad(
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    counts: np.ndarray,
    *,
    num_classes: int,
    l2: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~fedlake.client.logreg.loss_and_grad` for ``a`` clients at once, one row each.

    Args:
        params: stacked flat params (a, d).
        x: padded batches (a, B, f); rows where ``mask`` is False are ignored.
        y: integer labels (a, B).
        mask: (a, B) which rows belong to each client's batch.
        counts: (a,) rows per client (``mask.sum(1)``), each at least one.
        num_classes: ``c``; ``d = c * (f + 1)``.
        l2: strength of the penalty on each client's weight matrix.

    Returns:
        Per-client losses (a,) float64 and gradients (a, d) shaped like ``params``.
    """
    a, bsz, f = x.shape
    c, k = num_classes, num_classes * f
    dtype = params.dtype
    # logits transposed (a, c, B): reductions over classes then run along contiguous rows
    logits = np.matmul(params[:, :k].reshape(a, c, f), x.transpose(0, 2, 1))
    logits += params[:, k:, None]
    logits -= logits.max(axis=1, keepdims=True)  # log-sum-exp shift: exp() <= 1
    probs = np.exp(logits)
    norm = probs.sum(axis=1)  # (a, B)
    picked = np.take_along_axis(logits, y[:, None, :], axis=1)[:, 0, :]
    weight = mask / counts[:, None].astype(dtype)  # 1/n on each client's own rows, else 0
    loss = ((np.log(norm) - picked) * weight).sum(axis=1, dtype=np.float64)
    probs *= (weight / norm)[:, None, :]
    probs[np.arange(a)[:, None], y, np.arange(bsz)] -= weight  # (softmax - targets) / n
    grad = np.empty_like(params)
    np.matmul(probs, x, out=grad[:, :k].reshape(a, c, f))
    probs.sum(axis=2, out=grad[:, k:])
    if l2:
        w = params[:, :k]
        loss += 0.5 * l2 * np.einsum("ij,ij->i", w, w).astype(np.float64)
        grad[:, :k] += dtype.type(l2) * w
    return loss, grad


def fit_logreg_cohort(
    trainer: LogRegTrainer,
    params: np.ndarray,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    configs: Sequence[LocalConfig],
    rngs: Sequence[np.random.Generator],
    grad_transform: Transform | None,
) -> list[FitResult] | None:
    """Minibatch SGD of every client at once; clients that finished stay as they are."""
    theta = trainer._check_params(params)
    checked = [trainer._check_data(x, y) for x, y in data]
    sizes = [n for _, _, n in checked]
    xs = np.concatenate([x for x, _, _ in checked])
    ys = np.concatenate([y for _, y, _ in checked])
    schedule = draw_schedule(sizes, configs, rngs)
    m, d = len(sizes), theta.shape[0]
    lr, l2, c = FLOAT(configs[0].lr), trainer.l2, trainer.num_classes
    stack = np.tile(theta, (m, 1))  # sorted clients' params
    state: Any = None
    if grad_transform is not None:
        start = np.tile(theta, (m, 1))
        start.flags.writeable = False
        state = grad_transform.init(start)
        full = np.zeros((m, d), dtype=FLOAT)
    totals = np.zeros(m)
    for t in range(int(schedule.steps[0])):
        rows, mask, counts = schedule.batch(t)
        a = len(counts)
        loss, g = stacked_loss_and_grad(
            stack[:a], xs[rows], ys[rows], mask, counts, num_classes=c, l2=l2
        )
        if grad_transform is not None:
            full[:a] = g
            full[a:] = 0.0
            g, state = stacked_update(grad_transform, state, full, stack, schedule, rngs[0])
            g = g[:a]
        stack[:a] -= lr * g
        totals[:a] += loss
    return schedule.results(stack, totals)
