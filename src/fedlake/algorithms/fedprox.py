"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, "Federated Optimization in
Heterogeneous Networks", MLSys 2020): FedAvg plus a proximal term in local training."""

from __future__ import annotations

from dataclasses import replace
from typing import Unpack

from fedlake.algorithms.fedavg import LocalOptions, fedavg
from fedlake.core.algorithm import Algorithm
from fedlake.transforms.local import proximal


def fedprox(
    *,
    mu: float = 0.01,
    server_lr: float = 1.0,
    weighted: bool = True,
    **local: Unpack[LocalOptions],
) -> Algorithm:
    """FedAvg whose clients minimise ``f_i(w) + mu/2 ||w - w_global||^2`` (partial work kept)."""
    base = fedavg(server_lr=server_lr, weighted=weighted, **local)
    return replace(base, name="fedprox", local_step=proximal(mu))
