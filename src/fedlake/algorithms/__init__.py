"""Named FL recipes, each a few lines composing core pieces, and the spec they are built from."""

from fedlake.algorithms.adaptive import fedadagrad, fedadam, fedavgm, fedyogi
from fedlake.algorithms.compressed import compressed
from fedlake.algorithms.fedavg import fedavg
from fedlake.algorithms.fednova import fednova
from fedlake.algorithms.fedprox import fedprox
from fedlake.algorithms.personalized import personalized
from fedlake.algorithms.private import apply_dp
from fedlake.algorithms.registry import ALGORITHMS
from fedlake.algorithms.scaffold import scaffold
from fedlake.algorithms.spec import RecipeSpec, aggregator_options, build_algorithm

__all__ = [
    "ALGORITHMS",
    "RecipeSpec",
    "aggregator_options",
    "apply_dp",
    "build_algorithm",
    "compressed",
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
