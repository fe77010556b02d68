"""Personalisation as client plugins: fine-tuning, FedPer layers and Ditto's personal model.

- ``finetune``: every client fine-tunes the global model on its own train split before
  using it (evaluation only; training is plain federated averaging).
- ``fedper`` (Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with
  Personalization Layers", arXiv:1912.00818, 2019): the tensors named in ``layers``
  never leave the client; only the rest is federated.
- ``ditto`` (Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning
  Through Personalization", ICML 2021, Algorithm 1, the global update being plain local
  SGD): every client keeps its own model ``v``, trained each round on its data with a
  proximal pull ``lam * (v - w_global)`` towards the global model.

Each plugin's state is the client's personal values (FedPer: its layers' values; Ditto:
``v``); ``personal`` says which model the client would use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlake.core.params import ParamSpec
from fedlake.core.personal import Personalization, personal_config, personal_mask
from fedlake.core.plugin import ClientPlugin, PersonalContext, RoundContext
from fedlake.transforms.local import proximal

__all__ = ["ditto", "fedper", "finetune", "kept_personal", "personalization"]


def kept_personal(state: Any, size: int) -> np.ndarray | None:
    """The client's kept personal vector (float32, length ``size``), or None if it has none.

    Raises:
        ValueError: the kept vector has another length (the model or layers changed).
    """
    if state is None:
        return None
    values = np.asarray(state, dtype=np.float32)
    if values.shape != (size,):
        raise ValueError(
            f"the client's kept personal state has shape {values.shape}, expected ({size},): "
            "the model or the personal layers changed since it was stored"
        )
    return values


def _fedper_mask(mask: np.ndarray | None, dim: int) -> np.ndarray:
    if mask is None:
        raise ValueError("fedper needs the personal mask (see fedlake.core.personal.mask_for)")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (dim,):
        raise ValueError(f"the personal mask has shape {mask.shape}, the params ({dim},)")
    return mask


def fedper_start(global_params: np.ndarray, state: Any, mask: np.ndarray | None) -> np.ndarray:
    """The global params with the personal positions replaced by the client's kept values."""
    start = np.array(global_params, dtype=np.float32, copy=True)
    mask = _fedper_mask(mask, start.size)
    own = kept_personal(state, int(mask.sum()))
    if own is not None:
        start[mask] = own
    return start


def fedper(layers: tuple[str, ...]) -> ClientPlugin:
    """FedPer: ``layers`` train on the client and never leave it."""

    def kept_local(spec: ParamSpec) -> np.ndarray:
        return personal_mask(spec, layers)

    def before_fit(ctx: RoundContext, state: Any) -> tuple[RoundContext, Any]:
        return ctx.evolve(start=fedper_start(ctx.global_params, state, ctx.kept_local)), state

    def after_fit(ctx: RoundContext, state: Any) -> tuple[RoundContext, Any]:
        # the shared positions' training is uploaded; the personal ones stay exactly the
        # global values in the upload (delta 0 there) and are kept
        local = np.asarray(ctx.upload, dtype=np.float32)
        anchor = np.asarray(ctx.global_params, dtype=np.float32)
        if local.shape != anchor.shape:
            raise ValueError(f"local params are shaped {local.shape}, global ones {anchor.shape}")
        mask = _fedper_mask(ctx.kept_local, anchor.size)
        return ctx.evolve(upload=np.where(mask, anchor, local)), local[mask].copy()

    def personal(ctx: PersonalContext, state: Any) -> np.ndarray:
        mask = personal_mask(ctx.trainer.spec, layers)
        return fedper_start(np.asarray(ctx.global_params, dtype=np.float32), state, mask)

    return ClientPlugin(
        "fedper",
        before_fit=before_fit,
        after_fit=after_fit,
        kept_local=kept_local,
        personal=personal,
    )


def ditto(p: Personalization) -> ClientPlugin:
    """Ditto: a personal model trained each round with a pull towards the global one."""

    def after_fit(ctx: RoundContext, state: Any) -> tuple[RoundContext, Any]:
        local = np.asarray(ctx.upload, dtype=np.float32)
        anchor = np.asarray(ctx.global_params, dtype=np.float32)
        if local.shape != anchor.shape:
            raise ValueError(f"local params are shaped {local.shape}, global ones {anchor.shape}")
        v = kept_personal(state, anchor.size)
        v = anchor.copy() if v is None else v
        pull = proximal(p.lam, anchor=anchor) if p.lam else None  # lam 0: plain local SGD
        config = personal_config(p, ctx.config)
        fit = ctx.trainer.fit(
            v,
            ctx.dataset.x_train,
            ctx.dataset.y_train,
            config=config,
            rng=ctx.rng,
            grad_transform=pull,
        )
        v_new = np.array(fit.params, dtype=np.float32, copy=True)
        if v_new.shape != anchor.shape:
            raise ValueError(
                f"personal training returned params shaped {v_new.shape}, expected {anchor.shape}"
            )
        if not np.isfinite(v_new).all():  # never keep a diverged personal model
            bad = int((~np.isfinite(v_new)).sum())
            raise ValueError(f"ditto personal training diverged: {bad} non-finite values")
        return ctx.evolve(upload=local), v_new

    def personal(ctx: PersonalContext, state: Any) -> np.ndarray:
        anchor = np.asarray(ctx.global_params, dtype=np.float32)
        v = kept_personal(state, anchor.size)
        return anchor.copy() if v is None else v.copy()

    return ClientPlugin("ditto", after_fit=after_fit, personal=personal)


def finetune(p: Personalization) -> ClientPlugin:
    """Fine-tuning: each client would use the global model trained on its own data."""

    def personal(ctx: PersonalContext, state: Any) -> np.ndarray:
        anchor = np.asarray(ctx.global_params, dtype=np.float32)
        if len(ctx.y_train) == 0:  # nothing to fine-tune on
            return anchor.copy()
        config = personal_config(p, ctx.config)
        fit = ctx.trainer.fit(anchor, ctx.x_train, ctx.y_train, config=config, rng=ctx.rng)
        return np.asarray(fit.params, dtype=np.float32)

    return ClientPlugin("finetune", personal=personal)


def personalization(p: Personalization) -> ClientPlugin:
    """The plugin of ``p``'s kind."""
    if p.kind == "fedper":
        return fedper(p.layers)
    if p.kind == "ditto":
        return ditto(p)
    return finetune(p)
