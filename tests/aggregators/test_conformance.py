"""What every aggregation rule must do, run over every rule in ``AGGREGATORS``."""

import itertools

import numpy as np
import pytest
from aggregators.cohorts import updates

from fedlake.aggregators import AGGREGATORS, build_aggregator
from fedlake.core.aggregator import Aggregator

# 15 clients tolerate f = 3 for Krum (9) and Bulyan (15). With f = 3 every one of Bulyan's
# selections scores over at least 2 neighbours: with one (f <= 2, its last selections)
# the closest pair always ties, the tie goes to cohort order, and the result depends on
# the order of the cohort.
N, D = 15, 16
F = 3

SPECS = {
    "mean": {"kind": "mean"},
    "uniform_mean": {"kind": "mean", "uniform": True},
    "krum": {"kind": "krum", "f": F},
    "multi_krum": {"kind": "multi_krum", "f": F},
    "multi_krum_m3": {"kind": "multi_krum", "f": F, "m": 3},
    "bulyan": {"kind": "bulyan", "f": F},
    "median": {"kind": "median"},
    "trimmed_mean": {"kind": "trimmed_mean", "trim_ratio": 0.2},
    "geometric_median": {"kind": "geometric_median"},
    "centered_clip": {"kind": "centered_clip"},
    "centered_clip_3": {"kind": "centered_clip", "iterations": 3},
    "norm_bound": {"kind": "norm_bound"},
    "norm_bound_fixed_median": {"kind": "norm_bound", "max_norm": 3.0, "inner": "median"},
    "norm_bound_krum": {"kind": "norm_bound", "inner": {"kind": "krum", "f": F}},
}
# The weighted mean uses client weights (by design, it is FedAvg's rule); the robust rules
# are uniform: a client cannot buy influence by reporting a larger weight.
WEIGHTED = {"mean", "norm_bound"}
# Rules whose output is at most the largest honest norm however far one update is.
NOT_BOUNDED = {"mean", "uniform_mean"}


def build(name: str) -> Aggregator:
    return build_aggregator(SPECS[name])


def aggregate(agg: Aggregator, rows, weights=None, state=None) -> np.ndarray:
    ups = updates(rows, weights)
    vec, _ = agg.aggregate(ups, agg.init(D) if state is None else state)
    return vec


def cohort(seed: int = 0, n: int = N, centre: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centre + rng.normal(size=(n, D))).astype(np.float32)


rules = pytest.mark.parametrize("name", list(SPECS))


def test_every_rule_in_the_registry_is_covered():
    assert {spec["kind"] for spec in SPECS.values()} == set(AGGREGATORS)


@rules
def test_output_is_float32_of_shape_d(name):
    out = aggregate(build(name), cohort())
    assert out.dtype == np.float32 and out.shape == (D,)
    assert np.all(np.isfinite(out))


@rules
def test_permutation_invariance(name):
    rows = cohort(1)
    ref = aggregate(build(name), rows)
    rng = np.random.default_rng(7)
    for _ in range(5):
        order = rng.permutation(N)
        out = aggregate(build(name), rows[order])
        # continuous random data: no ties, so only float rounding may differ
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@rules
def test_identical_updates_give_that_update(name):
    common = np.linspace(-3, 5, D, dtype=np.float32)
    rows = np.tile(common, (N, 1))
    weights = np.arange(1, N + 1)
    out = aggregate(build(name), rows, weights)
    if name == "norm_bound_fixed_median":  # |common| > 3: every update is clipped to 3
        np.testing.assert_allclose(out, common * (3.0 / np.linalg.norm(common)), rtol=1e-6)
    else:
        np.testing.assert_array_equal(out, common)


@rules
def test_weights_matter_only_for_the_weighted_mean(name):
    rows = cohort(2)
    uniform = aggregate(build(name), rows)
    skewed = aggregate(build(name), rows, np.geomspace(1, 1e4, N))
    if name in WEIGHTED:
        assert not np.allclose(uniform, skewed)
    else:
        np.testing.assert_array_equal(uniform, skewed)


@rules
@pytest.mark.parametrize(("centre", "seed"), [(0.0, 3), (0.0, 4), (1.0, 5), (1.0, 6)])
def test_one_unbounded_update_cannot_drag_the_output(name, centre, seed):
    honest = cohort(seed, N - 1, centre)
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=D)
    bad = (1e30 * direction / np.linalg.norm(direction)).astype(np.float32)
    rows = np.vstack([honest[:4], bad, honest[4:]])
    out = aggregate(build(name), rows).astype(np.float64)
    assert np.all(np.isfinite(out))
    honest_max = np.linalg.norm(honest.astype(np.float64), axis=1).max()
    if name in NOT_BOUNDED:
        assert np.linalg.norm(out) > 1e28  # the mean follows the outlier
    else:
        assert np.linalg.norm(out) <= honest_max


@rules
def test_empty_cohort_is_an_error(name):
    agg = build(name)
    with pytest.raises(ValueError, match="empty"):
        agg.aggregate([], agg.init(D))


@rules
def test_too_few_updates_name_the_rule_and_the_condition(name):
    agg = build(name)
    assert agg.min_updates >= 1
    if agg.min_updates == 1:
        aggregate(agg, cohort(n=1))  # one update is enough for these
        return
    rows = cohort(n=agg.min_updates - 1)
    rule = agg.name.removeprefix("norm_bound+")
    with pytest.raises(ValueError) as caught:
        aggregate(agg, rows)
    message = str(caught.value)
    assert message.startswith(f"{rule} needs at least {agg.min_updates} updates")
    assert "n >= " in message and f"got {agg.min_updates - 1}" in message
    aggregate(agg, cohort(n=agg.min_updates))  # and exactly the minimum is enough


@rules
def test_inputs_are_not_modified_and_the_output_is_not_an_input(name):
    rows = cohort(8)
    ups = updates(rows)
    agg = build(name)
    out, _ = agg.aggregate(ups, agg.init(D))
    for u, row in zip(ups, rows, strict=True):
        np.testing.assert_array_equal(u.delta, row)
        assert not np.shares_memory(out, u.delta)


@rules
def test_state_returned_is_accepted_by_the_next_round(name):
    agg = build(name)
    state = agg.init(D)
    for seed in range(3):
        out, state = agg.aggregate(updates(cohort(seed)), state)
        assert out.shape == (D,)


@rules
@pytest.mark.parametrize("scale", [1e30, 3e38])
def test_large_finite_values_do_not_overflow(name, scale):
    # every update huge, with mixed signs: differences reach 2 * scale, squares 1e77
    rng = np.random.default_rng(9)
    signs = rng.choice([-1.0, 1.0], size=(N, D))
    rows = (scale * signs * rng.uniform(0.5, 1.0, size=(N, D))).astype(np.float32)
    out = aggregate(build(name), rows)  # warnings are errors: no overflow in any step
    assert np.all(np.isfinite(out))
    assert np.all(np.abs(out) <= scale)


@rules
def test_identical_huge_updates_give_that_update(name):
    common = np.full(D, 3e38, np.float32)
    common[::2] *= -1
    out = aggregate(build(name), np.tile(common, (N, 1)))
    if name == "norm_bound_fixed_median":
        np.testing.assert_allclose(out, common * (3.0 / np.linalg.norm(common.astype(float))))
    else:
        np.testing.assert_array_equal(out, common)


def test_rules_differ_from_one_another():
    # a sanity check that the parametrised tests above really run different rules
    rows = cohort(10)
    outs = {name: aggregate(build(name), rows).tobytes() for name in SPECS}
    for a, b in itertools.combinations(["mean", "krum", "median", "geometric_median"], 2):
        assert outs[a] != outs[b]
