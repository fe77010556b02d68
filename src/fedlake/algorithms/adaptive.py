"""FedAvg with a server optimiser: FedAvgM (Hsu, Qi and Brown, 2019) and FedAdagrad, FedAdam,
FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021)."""

from __future__ import annotations

from dataclasses import replace
from typing import Unpack

from fedlake.algorithms.fedavg import LocalOptions, fedavg
from fedlake.core.algorithm import Algorithm
from fedlake.core.transform import Transform
from fedlake.transforms.adaptive import fedadagrad as adagrad_step
from fedlake.transforms.adaptive import fedadam as adam_step
from fedlake.transforms.adaptive import fedyogi as yogi_step
from fedlake.transforms.server import server_momentum


def _with_server(name: str, server: Transform, local: LocalOptions) -> Algorithm:
    return replace(fedavg(**local), name=name, server=server)


def fedavgm(
    *, server_lr: float = 1.0, momentum: float = 0.9, **local: Unpack[LocalOptions]
) -> Algorithm:
    """FedAvg with server momentum: ``v = momentum v + Delta``, ``w += server_lr v``."""
    return _with_server("fedavgm", server_momentum(server_lr, momentum), local)


def fedadagrad(
    *,
    server_lr: float = 0.1,
    beta1: float = 0.0,
    tau: float = 1e-3,
    **local: Unpack[LocalOptions],
) -> Algorithm:
    """FedAvg with an Adagrad server step on the mean delta."""
    return _with_server("fedadagrad", adagrad_step(server_lr, beta1=beta1, tau=tau), local)


def fedadam(
    *,
    server_lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    **local: Unpack[LocalOptions],
) -> Algorithm:
    """FedAvg with an Adam server step (no bias correction, as in the paper)."""
    step = adam_step(server_lr, beta1=beta1, beta2=beta2, tau=tau)
    return _with_server("fedadam", step, local)


def fedyogi(
    *,
    server_lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    **local: Unpack[LocalOptions],
) -> Algorithm:
    """FedAvg with a Yogi server step (additive, sign-controlled second moment)."""
    step = yogi_step(server_lr, beta1=beta1, beta2=beta2, tau=tau)
    return _with_server("fedyogi", step, local)
