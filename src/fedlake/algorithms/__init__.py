"""Named FL recipes, each a few lines composing core pieces."""

from fedlake.algorithms.adaptive import fedadagrad, fedadam, fedavgm, fedyogi
from fedlake.algorithms.fedavg import fedavg
from fedlake.algorithms.fednova import fednova
from fedlake.algorithms.fedprox import fedprox
from fedlake.algorithms.personalized import personalized
from fedlake.algorithms.scaffold import scaffold

ALGORITHMS = {
    "fedadagrad": fedadagrad,
    "fedadam": fedadam,
    "fedavg": fedavg,
    "fedavgm": fedavgm,
    "fednova": fednova,
    "fedprox": fedprox,
    "fedyogi": fedyogi,
    "scaffold": scaffold,
}

__all__ = [
    "ALGORITHMS",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedprox",
    "fedyogi",
    "personalized",
    "scaffold",
]
