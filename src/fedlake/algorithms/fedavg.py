"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017)."""

from __future__ import annotations

from typing import TypedDict

from fedlake.aggregators.mean import weighted_mean
from fedlake.core.algorithm import Algorithm, LocalConfig
from fedlake.transforms.server import server_sgd


class LocalOptions(TypedDict, total=False):
    """Local-training options every recipe takes (FedAvg's defaults when omitted)."""

    client_lr: float
    local_epochs: int
    batch_size: int


def fedavg(
    *,
    client_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    server_lr: float = 1.0,
    weighted: bool = True,
) -> Algorithm:
    """Clients run local SGD; the server averages deltas weighted by examples."""
    return Algorithm(
        name="fedavg",
        local=LocalConfig(epochs=local_epochs, batch_size=batch_size, lr=client_lr),
        aggregator=weighted_mean(uniform=not weighted),
        server=server_sgd(server_lr),
    )
