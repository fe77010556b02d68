"""Vector transforms: local steps, upload processing, server optimisers."""

from fedlake.transforms.adaptive import AdaptiveState, fedadagrad, fedadam, fedyogi
from fedlake.transforms.server import MomentumState, server_momentum, server_sgd

__all__ = [
    "AdaptiveState",
    "MomentumState",
    "fedadagrad",
    "fedadam",
    "fedyogi",
    "server_momentum",
    "server_sgd",
]
