"""Aggregation rules: the weighted mean and Byzantine-robust rules, each with its paper."""

from fedlake.aggregators.bulyan import bulyan
from fedlake.aggregators.centered_clip import centered_clip
from fedlake.aggregators.geometric_median import geometric_median
from fedlake.aggregators.krum import krum, krum_scores, multi_krum
from fedlake.aggregators.mean import fold_all, weighted_mean
from fedlake.aggregators.median import median
from fedlake.aggregators.norm_bound import norm_bound
from fedlake.aggregators.registry import AGGREGATORS, NEEDS_F, build_aggregator
from fedlake.aggregators.trimmed_mean import trimmed_mean

__all__ = [
    "AGGREGATORS",
    "NEEDS_F",
    "build_aggregator",
    "bulyan",
    "centered_clip",
    "fold_all",
    "geometric_median",
    "krum",
    "krum_scores",
    "median",
    "multi_krum",
    "norm_bound",
    "trimmed_mean",
    "weighted_mean",
]
