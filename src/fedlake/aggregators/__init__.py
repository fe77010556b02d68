"""Aggregation rules."""

from fedlake.aggregators.mean import fold_all, weighted_mean

__all__ = ["fold_all", "weighted_mean"]
