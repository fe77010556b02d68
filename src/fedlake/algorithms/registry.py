"""The named recipes by config name: a new recipe is a new file plus a line here."""

from __future__ import annotations

from collections.abc import Callable

from fedlake.algorithms.adaptive import fedadagrad, fedadam, fedavgm, fedyogi
from fedlake.algorithms.fedavg import fedavg
from fedlake.algorithms.fednova import fednova
from fedlake.algorithms.fedprox import fedprox
from fedlake.algorithms.scaffold import scaffold
from fedlake.core.algorithm import Algorithm

ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    "fedadagrad": fedadagrad,
    "fedadam": fedadam,
    "fedavg": fedavg,
    "fedavgm": fedavgm,
    "fednova": fednova,
    "fedprox": fedprox,
    "fedyogi": fedyogi,
    "scaffold": scaffold,
}

__all__ = ["ALGORITHMS"]
