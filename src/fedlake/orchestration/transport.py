"""What travels in a round besides training: the encoded model down, client state kept."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedlake.client.local import ClientResult
from fedlake.compression.messages import decode_model, encode_model
from fedlake.core.codec import Compression
from fedlake.core.params import frozen
from fedlake.core.state import ServerState, round_rng
from fedlake.core.update import CONTROL, ClientUpdate

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


def keep_client_states(
    results: Iterable[ClientResult], states: dict[str, Any]
) -> Iterator[ClientResult]:
    """Pass results through, collecting the state each client keeps for its next round."""
    for result in results:
        if isinstance(result, ClientUpdate) and result.client_state is not None:
            states[result.client_id] = result.client_state
        yield result


def accepted_ids(rows: list[dict[str, Any]]) -> set[str]:
    """The clients whose update an attempt accepted."""
    return {row["client_id"] for row in rows if row["status"] == "accepted"}


def keep_controls(
    states: dict[str, Any], previous: Mapping[str, Any], aggregated: set[str]
) -> None:
    """SCAFFOLD: keep a client's new ``c_i`` only if the server aggregated its ``Delta c_i``.

    Otherwise (a retried attempt, a rejected update) its previous ``c_i`` stays, so the
    server's ``c`` remains the mean of the clients' control variates.
    """
    for cid, state in list(states.items()):
        if cid in aggregated or not isinstance(state, Mapping) or CONTROL not in state:
            continue
        old = (previous.get(cid) or {}).get(CONTROL)
        kept = {k: v for k, v in state.items() if k != CONTROL}
        if old is not None:
            kept[CONTROL] = old
        states[cid] = kept or None
