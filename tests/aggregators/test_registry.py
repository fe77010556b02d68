"""Building rules by name, and hyperparameters checked when a rule is built."""

import math

import pytest

from fedlake.aggregators import AGGREGATORS, NEEDS_F, build_aggregator

# (spec, what the message must contain: the parameter, the accepted range, the value given)
INVALID = [
    ({"kind": "krum", "f": -1}, ["f (Byzantine", ">= 0", "got -1"]),
    ({"kind": "krum", "f": 1.5}, ["f (Byzantine", "integer >= 0", "got 1.5"]),
    ({"kind": "krum", "f": True}, ["f (Byzantine", "integer >= 0", "got True"]),
    ({"kind": "multi_krum", "f": -1}, ["f (Byzantine", ">= 0", "got -1"]),
    ({"kind": "multi_krum", "f": 1, "m": 0}, ["m (updates averaged)", ">= 1", "got 0"]),
    ({"kind": "multi_krum", "f": 1, "m": 2.0}, ["m (updates averaged)", "integer >= 1", "got 2.0"]),
    ({"kind": "bulyan", "f": -1}, ["f (Byzantine", ">= 0", "got -1"]),
    ({"kind": "bulyan", "f": 1.5}, ["f (Byzantine", "integer >= 0", "got 1.5"]),
    ({"kind": "trimmed_mean", "trim_ratio": 0.5}, ["trim_ratio", "[0, 0.5)", "got 0.5"]),
    ({"kind": "trimmed_mean", "trim_ratio": -0.1}, ["trim_ratio", "[0, 0.5)", "got -0.1"]),
    ({"kind": "trimmed_mean", "trim_ratio": True}, ["trim_ratio", "[0, 0.5)", "got True"]),
    ({"kind": "trimmed_mean", "trim_ratio": math.nan}, ["trim_ratio", "[0, 0.5)", "got nan"]),
    ({"kind": "trimmed_mean", "trim_ratio": "0.1"}, ["trim_ratio", "[0, 0.5)", "got '0.1'"]),
    ({"kind": "geometric_median", "max_iter": 0}, ["max_iter", ">= 1", "got 0"]),
    ({"kind": "geometric_median", "max_iter": 2.5}, ["max_iter", "integer >= 1", "got 2.5"]),
    ({"kind": "geometric_median", "nu": 0}, ["nu (smoothing)", "> 0", "got 0"]),
    ({"kind": "geometric_median", "nu": -1e-6}, ["nu (smoothing)", "> 0", "got -1e-06"]),
    ({"kind": "geometric_median", "ftol": 0.0}, ["ftol", "> 0", "got 0.0"]),
    ({"kind": "geometric_median", "ftol": math.inf}, ["ftol", "finite number > 0", "got inf"]),
    ({"kind": "centered_clip", "tau": -1}, ["tau (clipping radius)", "> 0 or None", "got -1"]),
    ({"kind": "centered_clip", "tau": 0}, ["tau (clipping radius)", "> 0 or None", "got 0"]),
    ({"kind": "centered_clip", "iterations": 0}, ["iterations", ">= 1", "got 0"]),
    ({"kind": "norm_bound", "max_norm": 0}, ["max_norm", "finite number > 0 or None", "got 0"]),
    ({"kind": "norm_bound", "max_norm": math.inf}, ["max_norm", "> 0 or None", "got inf"]),
    ({"kind": "norm_bound", "max_norm": math.nan}, ["max_norm", "> 0 or None", "got nan"]),
    ({"kind": "norm_bound", "max_norm": -2.0}, ["max_norm", "> 0 or None", "got -2.0"]),
    ({"kind": "nope"}, ["aggregator", "accepted: mean, krum", "'nope'"]),
    ({"f": 1}, ["aggregator", "accepted: mean, krum", "None"]),
    ({"kind": "krum", "f": 1, "g": 2}, ["krum", "accepted: f", "'g'"]),
    ({"kind": "median", "trim_ratio": 0.1}, ["median", "accepted: none", "'trim_ratio'"]),
    ({"kind": "geometric_median", "tol": 1e-3}, ["accepted: max_iter, nu, ftol", "'tol'"]),
    ({"kind": "krum"}, ["krum", "'f'", "required"]),
    ({"kind": "krum", "f": 1, "inner": "median"}, ["inner", "only norm_bound", "krum"]),
    ({"kind": "median", "inner": "mean"}, ["inner", "only norm_bound", "median"]),
    ({"kind": "norm_bound", "inner": {"kind": "krum", "f": -1}}, ["f (Byzantine", "got -1"]),
    ({"kind": "norm_bound", "inner": "nope"}, ["aggregator", "'nope'"]),
]


@pytest.mark.parametrize(("spec", "parts"), INVALID, ids=[str(s) for s, _ in INVALID])
def test_invalid_hyperparameters_are_refused_when_built(spec, parts):
    with pytest.raises(ValueError) as caught:
        build_aggregator(spec)
    message = str(caught.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_valid_specs_build_the_named_rule():
    assert build_aggregator({"kind": "mean"}).name == "weighted_mean"
    assert build_aggregator({"kind": "mean", "uniform": True}).name == "mean"
    assert build_aggregator({"kind": "krum", "f": 2}).min_updates == 7
    assert build_aggregator({"kind": "multi_krum", "f": 1, "m": 1}).name == "krum"
    assert build_aggregator({"kind": "bulyan", "f": 1}).min_updates == 7
    assert build_aggregator({"kind": "trimmed_mean", "trim_ratio": 0}).name == "trimmed_mean"
    assert build_aggregator({"kind": "centered_clip", "tau": None}).name == "centered_clip"
    inner = {"kind": "trimmed_mean", "trim_ratio": 0.2}
    assert (
        build_aggregator({"kind": "norm_bound", "inner": inner}).name == "norm_bound+trimmed_mean"
    )


def test_the_spec_is_not_modified():
    spec = {"kind": "norm_bound", "max_norm": 1.0, "inner": "median"}
    build_aggregator(spec)
    assert spec == {"kind": "norm_bound", "max_norm": 1.0, "inner": "median"}


def test_rules_that_need_f_take_f():
    assert set(NEEDS_F) <= set(AGGREGATORS)
    for kind in NEEDS_F:
        assert build_aggregator({"kind": kind, "f": 0}).min_updates == 3
