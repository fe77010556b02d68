"""What a personalising client does in a round, around its ordinary local training.

A round runs ``start = start_params(...)``, then the usual local training from
``start`` (giving ``local``), then ``finish(...)``, whose first result replaces
``local`` when the delta to upload is computed and whose second is merged into the
state the client keeps for its next round (under the key :data:`PERSONAL`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedlake.client.trainer import Trainer
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization, personal_config
from fedlake.transforms.local import proximal

__all__ = ["PERSONAL", "finish", "kept_personal", "start_params"]

PERSONAL = "personal"  # client state key of the personal values (fedper) or model (ditto)


def kept_personal(kept: Mapping[str, Any] | None, size: int) -> np.ndarray | None:
    """The client's kept personal vector (float32, length ``size``), or None if it has none.

    Raises:
        ValueError: the kept vector has another length (the model or layers changed).
    """
    if not kept or kept.get(PERSONAL) is None:
        return None
    values = np.asarray(kept[PERSONAL], dtype=np.float32)
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


def start_params(
    p: Personalization,
    global_params: np.ndarray,
    kept: Mapping[str, Any] | None,
    mask: np.ndarray | None,
) -> np.ndarray:
    """The params a client's local training starts from (a new float32 array).

    FedPer (Arivazhagan et al., arXiv 2019): the global params with the personal
    positions replaced by the client's kept personal values, if it has any. Ditto and
    fine-tuning: the global params (Ditto's global update is plain local training).
    """
    start = np.array(global_params, dtype=np.float32, copy=True)
    if p.kind != "fedper":
        return start
    mask = _fedper_mask(mask, start.size)
    own = kept_personal(kept, int(mask.sum()))
    if own is not None:
        start[mask] = own
    return start


def finish(
    p: Personalization,
    *,
    trainer: Trainer,
    global_params: np.ndarray,
    local_params: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    config: LocalConfig,
    rng: np.random.Generator,
    kept: Mapping[str, Any] | None,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """After local training: ``(params whose delta from global_params is uploaded, to keep)``.

    - FedPer (Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with
      Personalization Layers", arXiv 2019): ``local_params`` on shared positions and
      ``global_params`` on personal ones, so the uploaded delta is exactly 0 there and
      personal values never leave the client; keeps the trained personal values.
    - Ditto (Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning
      Through Personalization", ICML 2021, Algorithm 1, the global update being plain
      local SGD): trains the personal model ``v`` (kept, or ``global_params`` the first
      time) for ``p.epochs`` epochs on ``(x, y)`` with the proximal term
      ``lam * (v - global_params)``, using ``rng``; keeps the new ``v`` and returns
      ``local_params`` unchanged.
    - Fine-tuning: ``(local_params, {})``.

    ``config`` is the client's local config (see
    :func:`fedlake.core.personal.personal_config` for what personal training changes).
    """
    local = np.asarray(local_params, dtype=np.float32)
    if p.kind == "finetune":
        return local, {}
    anchor = np.asarray(global_params, dtype=np.float32)
    if local.shape != anchor.shape:
        raise ValueError(f"local params are shaped {local.shape}, global ones {anchor.shape}")
    if p.kind == "fedper":
        mask = _fedper_mask(mask, anchor.size)
        upload = np.where(mask, anchor, local)
        return upload, {PERSONAL: local[mask].copy()}
    # ditto
    v = kept_personal(kept, anchor.size)
    v = anchor.copy() if v is None else v
    pull = proximal(p.lam, anchor=anchor) if p.lam else None  # lam 0: plain local SGD
    fit = trainer.fit(v, x, y, config=personal_config(p, config), rng=rng, grad_transform=pull)
    v_new = np.array(fit.params, dtype=np.float32, copy=True)
    if v_new.shape != anchor.shape:
        raise ValueError(
            f"personal training returned params shaped {v_new.shape}, expected {anchor.shape}"
        )
    if not np.isfinite(v_new).all():  # never keep a diverged personal model
        bad = int((~np.isfinite(v_new)).sum())
        raise ValueError(f"ditto personal training diverged: {bad} non-finite values")
    return local, {PERSONAL: v_new}
