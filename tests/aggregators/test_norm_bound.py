"""Norm bounding: exact numbers, the median bound, inner rules and the streaming fold."""

import numpy as np
import pytest
from aggregators.cohorts import run, updates

from fedlake.aggregators import (
    build_aggregator,
    centered_clip,
    fold_all,
    krum,
    median,
    norm_bound,
    weighted_mean,
)
from fedlake.aggregators.norm_bound import clip_update

# (3,4) has norm 5, (0,1) norm 1, (0,-2) norm 2; weights 1, 1, 2.
# max_norm = 2: (3,4) -> 2 * (3,4)/5 = (1.2, 1.6); the others stay ((0,-2) is exactly 2).
# weighted mean: ((1.2,1.6) + (0,1) + 2 (0,-2)) / 4 = (1.2, -1.4) / 4 = (0.3, -0.35)
ROWS = [[3, 4], [0, 1], [0, -2]]
WEIGHTS = [1, 1, 2]
EXPECTED = [0.3, -0.35]


def test_fixed_max_norm_then_weighted_mean():
    np.testing.assert_allclose(run(norm_bound(max_norm=2.0), ROWS, WEIGHTS), EXPECTED, rtol=1e-6)


def test_none_bounds_by_the_median_norm():
    # norms 5, 1, 2: median 2, the same clipping as max_norm = 2
    np.testing.assert_allclose(run(norm_bound(), ROWS, WEIGHTS), EXPECTED, rtol=1e-6)
    # even n: norms 5, 1, 2, 10 -> median (2 + 5) / 2 = 3.5; (3,4) and (6,8) become
    # 3.5 * (0.6, 0.8) = (2.1, 2.8); uniform weights: (4.2, 5.6 + 1 - 2) / 4 = (1.05, 1.15)
    out = run(norm_bound(), [*ROWS, [6, 8]])
    np.testing.assert_allclose(out, [1.05, 1.15], rtol=1e-6)


def test_inner_rule_gets_the_clipped_updates():
    # clipped to 2: (1.2, 1.6), (0, 1), (0, -2); coordinate median: x 1.2 0 0 -> 0,
    # y 1.6 1 -2 -> 1 (weights are not used by the median)
    out = run(norm_bound(max_norm=2.0, inner=median()), ROWS, WEIGHTS)
    np.testing.assert_array_equal(out, [0, 1])
    np.testing.assert_array_equal(
        run(build_aggregator({"kind": "norm_bound", "max_norm": 2.0, "inner": "median"}), ROWS),
        [0, 1],
    )


def test_fold_equals_aggregate_when_fixed_and_linear():
    agg = norm_bound(max_norm=2.0)
    assert agg.linear and agg.fold is not None
    ups = updates(ROWS, WEIGHTS)
    batch, _ = agg.aggregate(ups, agg.init(2))
    stream, _ = fold_all(agg, ups, 2, agg.init(2))
    np.testing.assert_allclose(stream, EXPECTED, rtol=1e-6)
    np.testing.assert_allclose(stream, batch, rtol=1e-6)
    rng = np.random.default_rng(3)
    many = updates(rng.normal(scale=3.0, size=(40, 7)), rng.integers(1, 9, size=40))
    batch, _ = agg.aggregate(many, None)
    stream, _ = fold_all(agg, many, 7, None)
    np.testing.assert_allclose(stream, batch, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("agg", "linear"),
    [
        (norm_bound(max_norm=2.0), True),
        (norm_bound(max_norm=2.0, inner=weighted_mean(uniform=True)), True),
        (norm_bound(), False),  # the median norm needs the whole cohort
        (norm_bound(max_norm=None, inner=weighted_mean()), False),
        (norm_bound(max_norm=2.0, inner=median()), False),  # the inner rule is not linear
        (norm_bound(max_norm=2.0, inner=centered_clip()), False),
    ],
)
def test_linear_only_when_fixed_and_the_inner_rule_is_linear(agg, linear):
    assert agg.linear is linear
    assert (agg.fold is not None) is linear


def test_name_state_and_min_updates_come_from_the_inner_rule():
    agg = norm_bound(max_norm=1.0, inner=krum(f=1))
    assert agg.name == "norm_bound+krum" and agg.min_updates == 5
    assert norm_bound().name == "norm_bound+weighted_mean"
    clip = norm_bound(max_norm=1.0, inner=centered_clip(tau=1.0))
    assert clip.init(3).tolist() == [0.0, 0.0, 0.0]  # centered clipping's history
    with pytest.raises(ValueError, match=r"krum needs at least 5 updates"):
        run(agg, ROWS)


def test_clip_update_keeps_short_updates_and_the_other_vectors():
    (short,) = updates([[3, 4]])
    assert clip_update(short, 5.0) is short  # norm exactly 5: untouched
    assert clip_update(short, 6.0) is short
    long = updates([[30, 40]])[0]
    long = type(long)(long.client_id, {**long.vectors, "control": np.ones(2, np.float32)}, 2.0)
    clipped = clip_update(long, 1.0)
    np.testing.assert_allclose(clipped.delta, [0.6, 0.8], rtol=1e-6)
    assert clipped.delta.dtype == np.float32
    np.testing.assert_array_equal(clipped.vectors["control"], [1, 1])
    assert clipped.weight == 2.0 and clipped.client_id == long.client_id
    np.testing.assert_array_equal(long.delta, [30, 40])  # the input is not modified


def test_clip_update_of_a_huge_update_has_the_bound_norm():
    # norm 3e38 * sqrt(1000) ~ 9.5e39 overflows float32; max_norm / norm ~ 1e-40 is below
    # float32's smallest normal number: both must stay float64 for the result to have norm 1
    (huge,) = updates(np.full((1, 1000), 3e38))
    clipped = clip_update(huge, 1.0)
    assert np.all(np.isfinite(clipped.delta))
    assert np.linalg.norm(clipped.delta.astype(np.float64)) == pytest.approx(1.0, rel=1e-6)
