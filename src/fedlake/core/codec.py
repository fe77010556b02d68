"""Wire codecs: how a flat vector becomes bytes on the network and back.

The types live in core so that an :class:`~fedlake.core.algorithm.Algorithm` can name
its codecs; the implementations (quantisation, sparsification, pruning, the framing)
live in :mod:`fedlake.compression`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np


class CodecError(ValueError):
    """A payload that cannot be decoded (truncated, corrupt, another codec); says why."""


class Codec(NamedTuple):
    """A pair of functions between float32 vectors and self-describing bytes.

    ``encode(vec, rng)`` may be lossy and random (stochastic rounding, random masks);
    ``decode(data, dim)`` is deterministic and validates every length and range,
    raising :class:`CodecError` on anything malformed. ``contractive`` promises
    ``E||decode(encode(x)) - x||^2 < ||x||^2`` for every x, which error feedback needs.
    ``train_positions(dim, rng)``, when set, are the only positions a client may train
    (structured updates): ``encode`` with an equally seeded ``rng`` keeps exactly them.
    """

    name: str
    encode: Callable[[np.ndarray, np.random.Generator], bytes]
    decode: Callable[[bytes | bytearray | memoryview, int], np.ndarray]
    lossless: bool = False
    contractive: bool = True
    train_positions: Callable[[int, np.random.Generator], np.ndarray] | None = None


class Pruner(Protocol):
    """Chooses which weights of the global model survive in a round."""

    def mask(self, params: np.ndarray, round_: int) -> np.ndarray | None:
        """Boolean mask of surviving weights in round ``round_`` (None: no pruning yet)."""
        ...


@dataclass(frozen=True)
class Compression:
    """How updates and models travel.

    Args:
        upload: codec of client deltas (None: float32, lossless).
        download: codec of the global model sent to clients (None: float32).
        pruning: magnitude pruning of the global model; clients then train and
            send only the surviving weights.

    Error feedback, which keeps what the upload codec drops on each client, is a client
    plugin (``fedlake.plugins.error_feedback``).
    """

    upload: Codec | None = None
    download: Codec | None = None
    pruning: Pruner | None = None
