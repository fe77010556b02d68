"""Sample-level DP-SGD (Abadi et al., CCS 2016) inside one client's local training (torch models).

Opacus supplies only the per-example gradients (its hooks); batch sampling, clipping, noise
and the step are done here, so the noise comes from :mod:`fedlake.privacy.noise` (Opacus'
``secure_mode`` does not work with torch 2.13). Each step:

1. Poisson sampling: every example joins the batch independently with probability
   ``q = min(1, batch_size / n)`` (an empty batch still gets noise);
2. each example's gradient, over all trainable tensors jointly, is scaled to L2 norm at
   most ``C = max_grad_norm``, and the clipped gradients are summed;
3. ``N(0, (z C)^2)`` noise is added to every coordinate (``z = noise_multiplier``) and the
   result divided by the expected batch size ``q n`` (a fixed denominator);
4. ``grad_transform`` (post-processing) and the trainer's optimiser step (plain SGD with
   ``config.lr`` by default) follow.

What the guarantee covers is the parameter vector: the ``train_loss`` and example count the
client also reports are not privatised.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from opacus.grad_sample import GradSampleHooks

from fedlake.client.torch_common import _read, torch_threads
from fedlake.core.algorithm import SampleDP
from fedlake.core.trainer import FitResult, LocalConfig
from fedlake.core.transform import Transform
from fedlake.plugins.dpsgd_budget import sampling_rate, steps_per_epoch
from fedlake.privacy.noise import NoiseSource, noise_source, poisson_sample

if TYPE_CHECKING:
    from fedlake.client.torch_adapter import TorchTrainer

__all__ = [
    "clip_and_sum",
    "dpsgd_fit",
    "poisson_sample",
    "privatize",
    "sampling_rate",
    "steps_per_epoch",
]


def clip_and_sum(grad_samples: Sequence[torch.Tensor], max_grad_norm: float) -> list[torch.Tensor]:
    """Scale each example's gradient (joint L2 norm over all tensors) to <= C, then sum rows.

    ``grad_samples[k]`` is shaped ``(batch, *shape_k)``; the result has one ``shape_k``
    tensor per entry.
    """
    sq = [g.reshape(g.shape[0], -1).double().pow(2).sum(dim=1) for g in grad_samples]
    norms = torch.stack(sq).sum(dim=0).sqrt()
    factor = max_grad_norm / norms.clamp(min=max_grad_norm)  # min(1, C / norm), safe at 0
    return [torch.tensordot(factor.to(g.dtype), g, dims=1) for g in grad_samples]


def privatize(
    summed: np.ndarray, dp: SampleDP, noise: NoiseSource, expected_batch: float
) -> np.ndarray:
    """``(summed + N(0, (z C)^2) per coordinate) / expected_batch`` in float64."""
    std = dp.noise_multiplier * dp.max_grad_norm
    drawn = noise.normal(summed.size, std)
    return (np.asarray(summed, dtype=np.float64) + drawn) / float(expected_batch)


def dpsgd_fit(
    trainer: TorchTrainer,
    params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: LocalConfig,
    rng: np.random.Generator,
    grad_transform: Transform | None = None,
) -> FitResult:
    """DP-SGD from ``params`` for ``config.epochs * steps_per_epoch(n, batch_size)`` steps.

    ``config.max_steps`` caps the steps (a straggler's partial work); the privacy facts
    report the steps actually taken.

    Secure noise also makes the batch selection secure; seeded noise (simulations) draws
    batches and noise from ``rng``, so a run is reproducible. ``FitResult.loss`` is the mean
    loss over the sampled examples, and ``FitResult.privacy`` the facts the ledger needs.
    """
    dp = config.dp
    if dp is None:
        raise ValueError("dpsgd_fit needs config.dp (a SampleDP), got None")
    bound = trainer._get_bound()
    start = trainer._load(bound, params)
    xt, yt = trainer._data(x, y)
    n, size = xt.shape[0], trainer.spec.size
    q = sampling_rate(n, int(config.batch_size))
    steps = int(config.epochs) * steps_per_epoch(n, int(config.batch_size))
    if config.max_steps is not None:
        steps = min(steps, int(config.max_steps))
    tensors = list({id(t): t for t, _ in bound.trainable}.values())  # tied weights once
    opt = trainer._make_optimizer(tensors, config.lr)
    noise = noise_source(dp.secure_noise, rng)
    sample_rng = None if dp.secure_noise else rng
    state: Any = None
    if grad_transform is not None:
        start.flags.writeable = False
        state = grad_transform.init(start)
    frozen = _frozen_part(bound, size)
    loss_sum, seen = 0.0, 0
    module = bound.module
    with torch_threads(trainer.threads), torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.default_generator.manual_seed(int(rng.integers(2**63 - 1)))
        hooks = _attach(module)
        try:
            module.train()
            for _ in range(steps):
                idx = torch.from_numpy(poisson_sample(n, q, sample_rng))
                summed, batch_loss = _clipped_sum(trainer, module, tensors, xt[idx], yt[idx], dp)
                noisy = privatize(summed, dp, noise, q * n)
                _set_grads(tensors, noisy)
                if grad_transform is not None:
                    state = trainer._transform_grads(bound, grad_transform, state, rng)
                opt.step()
                loss_sum, seen = loss_sum + batch_loss, seen + int(idx.numel())
        finally:
            hooks.cleanup()
            module.eval()
    out = _read(bound.entries, size)
    if not np.array_equal(_frozen_part(bound, size), frozen):
        raise ValueError(
            "DP-SGD changed untrained tensors (e.g. BatchNorm running statistics computed "
            "from the data), which would leak unprotected: use GroupNorm or no normalisation"
        )
    # no example ever sampled: report the loss of the (noised) result instead
    loss = loss_sum / seen if seen else trainer.evaluate(out, x, y)["loss"]
    privacy = {
        "noise_multiplier": float(dp.noise_multiplier),
        "sampling_rate": q,
        "steps": float(steps),
        "max_grad_norm": float(dp.max_grad_norm),
        "secure_noise": 1.0 if dp.secure_noise else 0.0,
    }
    return FitResult(params=out, loss=loss, num_examples=n, steps=steps, privacy=privacy)


def _attach(module: torch.nn.Module) -> GradSampleHooks:
    """Opacus per-example gradient hooks (per-example losses summed, not averaged)."""
    try:
        return GradSampleHooks(module, loss_reduction="sum", strict=True)
    except NotImplementedError as err:
        raise ValueError(
            "DP-SGD needs per-example gradients, and this model has trainable layers with "
            f"buffers (e.g. BatchNorm), which mix examples: {err}"
        ) from err


def _frozen_part(bound: Any, size: int) -> np.ndarray:
    """The flat params outside the trainable tensors (buffers, frozen weights)."""
    mask = np.ones(size, dtype=bool)
    for _, sl in bound.trainable:
        mask[sl] = False
    return _read(bound.entries, size)[mask]


def _clipped_sum(
    trainer: TorchTrainer,
    module: torch.nn.Module,
    tensors: list[torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    dp: SampleDP,
) -> tuple[np.ndarray, float]:
    """Sum of the batch's clipped per-example gradients (flat float64) and its loss sum."""
    dim = sum(t.numel() for t in tensors)
    if xb.shape[0] == 0:
        return np.zeros(dim, dtype=np.float64), 0.0
    for t in tensors:
        t.grad_sample = None  # type: ignore[attr-defined]  # Opacus' per-example slot
    loss = trainer._loss_fn(module(xb), yb, reduction="sum")
    with warnings.catch_warnings():  # Opacus' hooks need only output grads: expected
        warnings.filterwarnings(
            "ignore", message="Full backward hook is firing", category=UserWarning
        )
        loss.backward()
    samples = [
        _per_example(t, xb.shape[0])
        for t in tensors  # a tensor the forward pass did not use has no per-example grads
    ]
    clipped = clip_and_sum(samples, dp.max_grad_norm)
    flat = torch.cat([c.reshape(-1) for c in clipped]) if clipped else torch.zeros(0)
    return flat.detach().double().numpy(), float(loss.detach())


def _set_grads(tensors: list[torch.Tensor], flat: np.ndarray) -> None:
    """Write consecutive slices of ``flat`` into the tensors' ``.grad``."""
    offset = 0
    with torch.no_grad():
        for t in tensors:
            k = t.numel()
            g = torch.from_numpy(flat[offset : offset + k]).view(t.shape).to(t.dtype)
            if t.grad is None:
                t.grad = g.clone()
            else:
                t.grad.copy_(g)
            offset += k


def _per_example(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``t``'s per-example gradients from Opacus' hooks (zeros if the forward pass skipped it)."""
    grads = getattr(t, "grad_sample", None)
    return grads if isinstance(grads, torch.Tensor) else t.new_zeros((batch, *t.shape))
