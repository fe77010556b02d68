"""FedAvg with a server optimiser: FedAvgM (Hsu, Qi and Brown, 2019) and FedAdagrad, FedAdam,
FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021)."""

from __future__ import annotations

from dataclasses import replace

from fedlake.algorithms.fedavg import fedavg
from fedlake.core.algorithm import Algorithm
from fedlake.transforms.adaptive import fedadagrad as adagrad_step
from fedlake.transforms.adaptive import fedadam as adam_step
from fedlake.transforms.adaptive import fedyogi as yogi_step
from fedlake.transforms.server import server_momentum


def _base(name: str, client_lr: float, local_epochs: int, batch_size: int) -> Algorithm:
    return replace(
        fedavg(client_lr=client_lr, local_epochs=local_epochs, batch_size=batch_size), name=name
    )


def fedavgm(
    *,
    client_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    server_lr: float = 1.0,
    momentum: float = 0.9,
) -> Algorithm:
    """FedAvg with server momentum: ``v = momentum v + Delta``, ``w += server_lr v``."""
    algo = _base("fedavgm", client_lr, local_epochs, batch_size)
    return replace(algo, server=server_momentum(server_lr, momentum))


def fedadagrad(
    *,
    client_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    server_lr: float = 0.1,
    beta1: float = 0.0,
    tau: float = 1e-3,
) -> Algorithm:
    """FedAvg with an Adagrad server step on the mean delta."""
    algo = _base("fedadagrad", client_lr, local_epochs, batch_size)
    return replace(algo, server=adagrad_step(server_lr, beta1=beta1, tau=tau))


def fedadam(
    *,
    client_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    server_lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> Algorithm:
    """FedAvg with an Adam server step (no bias correction, as in the paper)."""
    algo = _base("fedadam", client_lr, local_epochs, batch_size)
    return replace(algo, server=adam_step(server_lr, beta1=beta1, beta2=beta2, tau=tau))


def fedyogi(
    *,
    client_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    server_lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> Algorithm:
    """FedAvg with a Yogi server step (additive, sign-controlled second moment)."""
    algo = _base("fedyogi", client_lr, local_epochs, batch_size)
    return replace(algo, server=yogi_step(server_lr, beta1=beta1, beta2=beta2, tau=tau))
