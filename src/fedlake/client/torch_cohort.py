"""Vectorised local SGD of a cohort of :class:`TorchTrainer` clients (``torch.func.vmap``).

Each client's parameters are one row of a stacked (m, d) tensor; one step evaluates every
active client's loss and gradient on its own (padded, masked) minibatch with
``vmap(grad(loss))`` over ``functional_call``. Matches ``TorchTrainer.fit`` with plain SGD
(no momentum, no weight decay) on models whose training step is per-client deterministic:
no dropout, no BatchNorm, no buffers, float32 parameters, no tied weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedlake.client.schedule import draw_schedule, stacked_update
from fedlake.client.torch_adapter import TorchTrainer, torch_threads
from fedlake.core.params import FLOAT
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform

__all__ = ["fit_torch_cohort", "vectorisable"]


def vectorisable(trainer: TorchTrainer) -> bool:
    """Whether ``fit`` on this trainer can be matched under ``vmap`` (see the module doc).

    GroupNorm and LayerNorm work row by row, so only BatchNorm-like layers (and any
    buffers) are refused; dropout is refused only with ``p > 0``.
    """
    if trainer.optimizer != "sgd" or trainer.momentum or trainer.weight_decay:
        return False
    bound = trainer._get_bound()
    module = bound.module
    if any(True for _ in module.buffers()):
        return False
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            return False
        if isinstance(sub, nn.RReLU) or (
            isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0
        ):
            return False
    names = [name for name, _ in module.named_parameters(remove_duplicate=False)]
    unique = {id(p) for p in module.parameters()}
    spec = trainer.spec
    return (
        len(unique) == len(names) == len(spec.tensors)
        and set(names) == set(spec.names)
        and all(t.dtype == "float32" for t in spec.tensors)
    )


def _step_fn(trainer: TorchTrainer) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``vmap(grad_and_value(loss))`` over (flat params, padded x, y, row weights)."""
    module = trainer._get_bound().module
    slices = [
        (t.name, sl, t.shape)
        for t, sl in zip(trainer.spec.tensors, trainer.spec.slices().values(), strict=True)
    ]

    def loss(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> Any:
        params = {name: flat[sl].view(shape) for name, sl, shape in slices}
        out = functional_call(module, params, (x,))
        return (trainer._loss_fn(out, y, reduction="none") * w).sum()

    return vmap(grad_and_value(loss))


def fit_torch_cohort(
    trainer: TorchTrainer,
    params: np.ndarray,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    configs: Sequence[LocalConfig],
    rngs: Sequence[np.random.Generator],
    grad_transform: Transform | None,
) -> list[FitResult] | None:
    """SGD of every client at once; None (nothing drawn) for a model or optimiser it can't match."""
    if not vectorisable(trainer):
        return None
    bound = trainer._get_bound()
    theta = trainer._load(bound, params).copy()
    checked = [trainer._data(x, y) for x, y in data]
    sizes = [int(x.shape[0]) for x, _ in checked]
    xs = torch.cat([x for x, _ in checked])
    ys = torch.cat([y for _, y in checked])
    m, d = len(sizes), theta.shape[0]
    trainable = np.zeros(d, dtype=bool)
    for _, sl in bound.trainable:
        trainable[sl] = True
    step = _step_fn(trainer)
    module = bound.module
    with torch_threads(trainer.threads), torch.random.fork_rng(devices=[]):
        module.train()
        try:
            probe = step(  # refuses (before any draw) what vmap can't run, e.g. random ops
                torch.from_numpy(theta[None]), xs[:1][None], ys[:1][None], torch.ones(1, 1)
            )
        except RuntimeError:
            module.eval()
            return None
        del probe
        schedule = draw_schedule(sizes, configs, rngs, seed_draw=True)
        stack_np = np.tile(theta, (m, 1))
        stack = torch.from_numpy(stack_np)  # shares memory: the transform sees the numpy view
        state: Any = None
        if grad_transform is not None:
            start = np.tile(theta, (m, 1))
            start.flags.writeable = False
            state = grad_transform.init(start)
            full = np.zeros((m, d), dtype=FLOAT)
        frozen = torch.from_numpy(~trainable) if not trainable.all() else None
        lr = float(configs[0].lr)
        totals = np.zeros(m)
        for t in range(int(schedule.steps[0])):
            rows, mask, counts = schedule.batch(t)
            a = len(counts)
            idx = torch.from_numpy(rows)
            weights = torch.from_numpy(mask / counts[:, None].astype(np.float32)).float()
            with torch.no_grad():
                g, loss = step(stack[:a], xs[idx], ys[idx], weights)
                if frozen is not None:
                    g[:, frozen] = 0.0
                if grad_transform is not None:
                    full[:a] = g.numpy()
                    full[a:] = 0.0
                    new, state = stacked_update(
                        grad_transform, state, full, stack_np, schedule, rngs[0]
                    )
                    g = torch.from_numpy(new[:a])
                    if frozen is not None:
                        g[:, frozen] = 0.0
                stack[:a].add_(g, alpha=-lr)
            totals[:a] += loss.numpy()
        module.eval()
    return schedule.results(stack_np, totals)
