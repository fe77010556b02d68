"""FedPer (Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with
Personalization Layers", arXiv:1912.00818, 2019): the tensors named in ``layers`` train on
the client and never leave it; only the rest is federated. The plugin's state is the
client's values of those layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedlake.core.params import ParamSpec
from fedlake.core.personal import personal_mask
from fedlake.core.plugin import ClientPlugin, PersonalContext, RoundContext

__all__ = ["fedper", "fedper_start", "kept_personal"]


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
