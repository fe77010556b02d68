"""A whole SecAgg+ round in one process: the in-memory fake of the transport.

Every message goes through its byte encoding and back, as it would over a network, so
simulations and tests exercise the wire format. Clients can be made to drop out before
any stage. Nothing here is needed by a real deployment, which moves the same messages
between :class:`~fedlake.secagg.client.ClientSession` and
:class:`~fedlake.secagg.server.ServerSession` over its own transport.
"""

from __future__ import annotations

import random as _random
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from fedlake.secagg.client import ClientSession
from fedlake.secagg.config import SecAggConfig
from fedlake.secagg.messages import KeyDirectory, Message, ShareDelivery, UnmaskRequest
from fedlake.secagg.server import Aggregate, ServerSession

__all__ = ["run_round"]

STAGES = 4


def run_round(
    config: SecAggConfig,
    inputs: Mapping[int, np.ndarray],
    *,
    dropouts: Sequence[Collection[int]] = (),
    random: _random.Random | None = None,
    view: list[bytes] | None = None,
) -> Aggregate:
    """Run one round among ``config.clients`` in memory and return the server's aggregate.

    Args:
        config: the round's public parameters.
        inputs: each client's encoded input (``config.length`` values in Z_R).
        dropouts: ``dropouts[i]`` are clients that vanish before sending their message of
            stage i (0: keys, 1: shares, 2: masked input, 3: unmasking); a client that
            drops stays dropped.
        random: seeds every client's secrets (tests only); None uses the OS entropy.
        view: when given, every byte string the server receives or sends is appended.

    Raises:
        RoundAborted: the server could not finish (too many dropouts); says why.
    """
    if len(dropouts) > STAGES:
        raise ValueError(f"expected at most {STAGES} dropout sets, got {len(dropouts)}")
    if set(inputs) != set(config.clients):
        raise ValueError(
            f"expected inputs for clients {list(config.clients)}, got {sorted(inputs)}"
        )
    gone: set[int] = set()

    def alive(stage: int) -> list[int]:
        """The clients still there to send their stage-``stage`` message."""
        if stage < len(dropouts):
            gone.update(dropouts[stage])
        return [u for u in config.clients if u not in gone]

    clients = {u: ClientSession(config, u, random=random) for u in config.clients}
    server = ServerSession(config)

    def up(message: Message) -> None:
        """Client to server, through the bytes."""
        raw = message.to_bytes()
        if view is not None:
            view.append(raw)
        server.receive(type(message).from_bytes(raw))

    def down(message: Message) -> bytes:
        """Server to client: the bytes."""
        raw = message.to_bytes()
        if view is not None:
            view.append(raw)
        return raw

    for u in alive(0):
        up(clients[u].advertise())
    directories = {u: down(m) for u, m in server.close_advertise().items()}
    for u in alive(1):
        if u in directories:
            up(clients[u].share_keys(KeyDirectory.from_bytes(directories[u])))
    deliveries = {u: down(m) for u, m in server.close_share_keys().items()}
    for u in alive(2):
        if u in deliveries:
            delivery = ShareDelivery.from_bytes(deliveries[u])
            up(clients[u].masked_input(delivery, np.asarray(inputs[u])))
    requests = {u: down(m) for u, m in server.close_masked_input().items()}
    for u in alive(3):
        if u in requests:
            up(clients[u].unmask(UnmaskRequest.from_bytes(requests[u])))
    return server.close_unmask()
