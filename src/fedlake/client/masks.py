"""Which positions a client trains and sends: pruning, structured uploads, kept layers."""

from __future__ import annotations

import numpy as np

from fedlake.core.codec import Codec
from fedlake.core.transform import Transform, chain
from fedlake.transforms.local import add_correction

__all__ = ["corrected", "trainable", "upload_mask"]


def upload_mask(prune: np.ndarray | None, kept_local: np.ndarray | None) -> np.ndarray | None:
    """The positions an upload carries: surviving (not pruned) and shared (not kept local)."""
    if kept_local is None:
        return prune
    shared = ~kept_local
    return shared if prune is None else prune & shared


def corrected(step: Transform | None, correction: np.ndarray | None) -> Transform | None:
    """``step`` after SCAFFOLD's gradient correction (one client's (d,) or a stack's (m, d))."""
    if correction is None:
        return step
    fix = add_correction(correction)
    return fix if step is None else chain(fix, step)


def trainable(
    mask: np.ndarray | None, upload: Codec | None, dim: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.random.Generator]:
    """Which weights a client trains, and the generator its upload is encoded with.

    Pruned weights never train. With a structured upload (Konecny et al., 2016) the
    client also draws its random mask before training and trains only those weights;
    the encoder, given an identically seeded generator, keeps exactly them.
    """
    if upload is None or upload.train_positions is None:
        return mask, rng
    key = int(rng.integers(0, 2**63))
    surviving = np.arange(dim) if mask is None else np.flatnonzero(mask)
    chosen = upload.train_positions(surviving.size, np.random.default_rng(key))
    trainable = np.zeros(dim, dtype=bool)
    trainable[surviving[chosen]] = True
    return trainable, np.random.default_rng(key)
