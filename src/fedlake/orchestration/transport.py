"""The round's download: the (pruned) global model, encoded once for every client."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fedlake.compression.messages import decode_model, encode_model
from fedlake.core.codec import Compression
from fedlake.core.params import frozen
from fedlake.core.rng import round_rng
from fedlake.core.state import ServerState

DOWNLOAD_RNG = 6  # purpose tag of the generator of download encoding (stochastic rounding)


@dataclass(frozen=True)
class Download:
    """A round's download message, what clients decode from it, and the pruning mask."""

    payload: bytes
    received: np.ndarray
    mask: np.ndarray | None
    ratio: float  # float32 bytes of the model / bytes of the message


def prepare_download(
    compression: Compression, state: ServerState, seed: int
) -> tuple[ServerState, Download]:
    """Prune the global model if configured, and encode the round's download message.

    Returns the (possibly pruned) state the round continues from and the message. The
    model is encoded once per round since every client gets the same bytes;
    ``received`` is what each client decodes from them.
    """
    mask = compression.pruning.mask(state.params, state.round) if compression.pruning else None
    if mask is not None:  # the pruned model is the global model from now on
        state = replace(state, params=frozen(state.params * mask))
    rng = round_rng(seed, state.round, DOWNLOAD_RNG)
    payload = encode_model(state.params, mask, compression.download, rng)
    received, _ = decode_model(payload, state.dim, compression.download)
    return state, Download(payload, frozen(received), mask, 4 * state.dim / len(payload))
