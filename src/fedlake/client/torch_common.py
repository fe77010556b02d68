"""Torch helpers shared by the torch trainer and DP-SGD: flat reads of tensors, thread pinning."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from fedlake.core.params import FLOAT

__all__ = ["torch_threads"]

_Entries = list[tuple[torch.Tensor, slice]]


def _read(entries: _Entries, size: int, *, grads: bool = False) -> np.ndarray:
    """Tensors (or their gradients; missing ones read as zeros) as one float32 vector."""
    out = np.zeros(size, dtype=FLOAT)
    for t, sl in entries:
        src = t.grad if grads else t
        if src is not None:
            out[sl] = src.detach().reshape(-1).numpy()
    return out


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, restoring the caller's setting after."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)
