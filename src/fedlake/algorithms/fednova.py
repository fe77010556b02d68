"""FedNova (Wang, Liu, Liang, Joshi and Poor, "Tackling the Objective Inconsistency Problem
in Heterogeneous Federated Optimization", NeurIPS 2020) as a recipe."""

from __future__ import annotations

from dataclasses import replace
from typing import Unpack

from fedlake.aggregators.fednova import fednova as fednova_rule
from fedlake.algorithms.fedavg import LocalOptions, fedavg
from fedlake.core.algorithm import Algorithm
from fedlake.transforms.local import proximal


def fednova(*, mu: float = 0.0, server_lr: float = 1.0, **local: Unpack[LocalOptions]) -> Algorithm:
    """Normalised averaging: each delta divided by its client's local progress (steps).

    With ``mu > 0`` clients also use FedProx's proximal term, and the normalisation
    uses the matching ``a_i``.
    """
    base = fedavg(server_lr=server_lr, **local)
    return replace(
        base,
        name="fednova",
        aggregator=fednova_rule(client_lr=base.local.lr, mu=mu),
        local_step=proximal(mu) if mu else None,
    )
