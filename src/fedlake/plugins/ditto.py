"""Ditto (Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021, Algorithm 1, the global update being plain local SGD): every
client keeps its own model ``v``, trained each round on its data with a proximal pull
``lam * (v - w_global)`` towards the global model. The plugin's state is ``v``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlake.core.personal import Personalization, personal_config
from fedlake.core.plugin import ClientPlugin, PersonalContext, RoundContext
from fedlake.plugins.fedper import kept_personal
from fedlake.transforms.local import proximal

__all__ = ["ditto"]


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
