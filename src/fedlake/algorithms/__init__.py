"""Named FL recipes, each a few lines composing core pieces."""

from fedlake.algorithms.fedavg import fedavg

ALGORITHMS = {"fedavg": fedavg}

__all__ = ["ALGORITHMS", "fedavg"]
