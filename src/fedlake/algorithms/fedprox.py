"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in
Heterogeneous Networks", MLSys 2020): FedAvg plus a proximal term in local training."""

from __future__ import annotations

from dataclasses import replace

from fedlake.algorithms.fedavg import fedavg
from fedlake.core.algorithm import Algorithm
from fedlake.transforms.local import proximal


def fedprox(
    *,
    mu: float = 0.01,
    client_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    server_lr: float = 1.0,
    weighted: bool = True,
) -> Algorithm:
    """FedAvg whose clients minimise ``f_i(w) + mu/2 ||w - w_global||^2`` (partial work kept)."""
    base = fedavg(
        client_lr=client_lr,
        local_epochs=local_epochs,
        batch_size=batch_size,
        server_lr=server_lr,
        weighted=weighted,
    )
    return replace(base, name="fedprox", local_step=proximal(mu))
