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
    raising :class:`CodecError` on anything malformed.
    """

    name: str
    encode: Callable[[np.ndarray, np.random.Generator], bytes]
    decode: Callable[[bytes, int], np.ndarray]
    lossless: bool = False


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
        error_feedback: clients keep what compression dropped (a per-client residual)
            and add it to their next delta (Stich et al., NeurIPS 2018).
        pruning: magnitude pruning of the global model; clients then train and
            send only the surviving weights.
    """

    upload: Codec | None = None
    download: Codec | None = None
    error_feedback: bool = False
    pruning: Pruner | None = None

    def __post_init__(self) -> None:
        if self.error_feedback and (self.upload is None or self.upload.lossless):
            raise ValueError(
                "error_feedback needs a lossy upload codec (top-k, random-k or quantisation); "
                "with a lossless one the residual is always zero"
            )

    @property
    def is_plain(self) -> bool:
        """True when nothing is compressed (float32 both ways, no pruning)."""
        return self.upload is None and self.download is None and self.pruning is None
