"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh, "SCAFFOLD: Stochastic
Controlled Averaging for Federated Learning", ICML 2020), option II control variates."""

from __future__ import annotations

from dataclasses import replace
from typing import Unpack

from fedlake.algorithms.fedavg import LocalOptions, fedavg
from fedlake.core.algorithm import Algorithm, with_plugins
from fedlake.plugins.scaffold import scaffold_client, scaffold_server


def scaffold(
    *, server_lr: float = 1.0, weighted: bool = True, **local: Unpack[LocalOptions]
) -> Algorithm:
    """Local steps corrected by ``c - c_i``; control variates kept per client between rounds.

    A client seen for the first time starts from ``c_i = 0``; ``c_i+ = c_i - c + (x - y_i)
    / (K lr)`` with K its actual steps (stragglers included); the server moves ``c`` by
    ``|S|/N`` times the mean ``Delta c_i``, weighted like the deltas (by examples when
    ``weighted``, as in the paper when not), for a cohort S of a population of N.
    Downloads and uploads carry one extra model-sized vector.
    """
    base = fedavg(server_lr=server_lr, weighted=weighted, **local)
    named = replace(base, name="scaffold")
    return with_plugins(named, client=(scaffold_client(),), server=(scaffold_server(),))
