"""Properties of the robust rules on random cohorts (hypothesis)."""

import math

import numpy as np
from aggregators.cohorts import run, updates
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlake.aggregators import (
    centered_clip,
    fold_all,
    geometric_median,
    krum,
    median,
    multi_krum,
    norm_bound,
    trimmed_mean,
    weighted_mean,
)
from fedlake.aggregators._matrix import pairwise_sq_distances
from fedlake.aggregators.bulyan import mean_around_median
from fedlake.aggregators.trimmed_mean import trimmed_count

SETTINGS = settings(max_examples=60, deadline=None)

honest_values = st.floats(-100, 100, width=32)
# anything finite a Byzantine client may send, from tiny to near the float32 limit
any_values = st.one_of(
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([1e30, -1e30, 3e38, -3e38, 1e10, -1e10]),
)


def matrix(rows: int, cols: int, elements) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, (rows, cols), elements=elements)


@st.composite
def split_cohort(draw, *, n_max: int, byzantine_max):
    """(honest, byzantine) rows: at most ``byzantine_max(n)`` Byzantine among n."""
    n = draw(st.integers(1, n_max))
    d = draw(st.integers(1, 6))
    b = draw(st.integers(0, byzantine_max(n)))
    honest = draw(matrix(n - b, d, honest_values))
    byzantine = draw(matrix(b, d, any_values))
    return honest, byzantine


def shuffled(draw, honest: np.ndarray, byzantine: np.ndarray) -> np.ndarray:
    rows = np.vstack([honest, byzantine])
    return rows[draw(st.permutations(range(len(rows))))]


def assert_in_honest_box(out: np.ndarray, honest: np.ndarray) -> None:
    assert np.all(out >= honest.min(axis=0)) and np.all(out <= honest.max(axis=0))


@SETTINGS
@given(split_cohort(n_max=12, byzantine_max=lambda n: (n - 1) // 2), st.data())
def test_median_stays_within_the_honest_range_of_every_coordinate(cohort, data):
    # fewer Byzantine than honest: every middle value is bracketed by honest values
    honest, byzantine = cohort
    out = run(median(), shuffled(data.draw, honest, byzantine))
    assert_in_honest_box(out, honest)


@SETTINGS
@given(st.integers(1, 14), st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.45]), st.data())
def test_trimmed_mean_stays_within_the_honest_range_when_byzantine_are_trimmed(n, ratio, data):
    # at most k = floor(ratio * n) Byzantine: among the k + 1 smallest (largest) values of
    # a coordinate one is honest, so every value kept lies in the honest range
    k = trimmed_count(n, ratio)
    assert k <= ratio * n + 1e-9 < k + 1  # floor(ratio * n)
    d = data.draw(st.integers(1, 6))
    b = data.draw(st.integers(0, k))
    honest = data.draw(matrix(n - b, d, honest_values))
    byzantine = data.draw(matrix(b, d, any_values))
    out = run(trimmed_mean(trim_ratio=ratio), shuffled(data.draw, honest, byzantine))
    assert_in_honest_box(out, honest)


@SETTINGS
@given(st.integers(0, 3), st.data())
def test_krum_picks_one_of_the_inputs(f, data):
    n = data.draw(st.integers(2 * f + 3, 2 * f + 8))
    rows = data.draw(matrix(n, data.draw(st.integers(1, 6)), any_values))
    out = run(krum(f=f), rows)
    assert any(np.array_equal(out, row) for row in rows)


@SETTINGS
@given(
    st.integers(2, 8),
    st.integers(1, 20),
    st.sampled_from([0.0, 1e4, -1e4, 3e5]),
    st.sampled_from([1e-2, 1.0, 1e3]),
    st.data(),
)
def test_pairwise_distances_match_a_direct_float64_computation(n, d, offset, spread, data):
    unit = data.draw(matrix(n, d, st.floats(-1, 1, width=32)))
    m = (offset + spread * unit.astype(np.float64)).astype(np.float32)
    x = m.astype(np.float64)
    expected = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    got = pairwise_sq_distances(m)
    # rounding relative to the spread of the updates, not to their size (offset^2 * d)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * expected.max() + 1e-300)


@st.composite
def rows_and_beta(draw):
    k = draw(st.integers(3, 12))
    beta = draw(st.integers(1, k))
    values = draw(matrix(draw(st.integers(1, 4)), k, any_values))
    return values, beta


@SETTINGS
@given(rows_and_beta())
def test_mean_around_median_is_the_mean_of_the_beta_values_nearest_the_median(case):
    values, beta = case
    got = mean_around_median(values, beta)
    for row, value in zip(values, got, strict=True):
        ordered = sorted(float(v) for v in row)
        k = len(ordered)
        mid = ordered[k // 2] if k % 2 else (ordered[k // 2 - 1] + ordered[k // 2]) / 2
        by_distance = sorted(ordered, key=lambda v: abs(v - mid))
        distances = [abs(v - mid) for v in by_distance]
        assume(beta == k or distances[beta - 1] < distances[beta])  # no tie at the cut
        nearest = by_distance[:beta]
        expected = math.fsum(nearest) / beta
        # float64 sum of the window itself: error relative to the window's own values
        assert abs(value - expected) <= 1e-12 * math.fsum(abs(v) for v in nearest) / beta


@SETTINGS
@given(st.integers(3, 9), st.integers(1, 6), st.data())
def test_multi_krum_with_m_n_and_f_0_is_the_uniform_mean(n, d, data):
    rows = data.draw(matrix(n, d, honest_values))
    weights = data.draw(st.lists(st.integers(1, 100), min_size=n, max_size=n))
    out = run(multi_krum(f=0, m=n), rows, weights)
    mean = run(weighted_mean(uniform=True), rows, weights)
    np.testing.assert_allclose(out, mean, rtol=1e-6, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(5, 11), st.integers(2, 5), st.data())
def test_geometric_median_stays_near_the_honest_updates(n, d, data):
    # Minsker (2015), Lemma 2.1: if at most alpha * n points are farther than r from z
    # (alpha < 1/2), the geometric median is within C_alpha * r of z, with
    # C_alpha = (1 - alpha) / sqrt(1 - 2 alpha). z: the honest mean; r: the largest
    # honest distance to it; alpha = b / n.
    b = data.draw(st.integers(1, (n - 1) // 2))
    honest = data.draw(matrix(n - b, d, honest_values))
    byzantine = data.draw(matrix(b, d, any_values))
    z = honest.astype(np.float64).mean(axis=0)
    r = np.linalg.norm(honest - z, axis=1).max()
    assume(r > 1e-3)
    alpha = b / n
    bound = (1 - alpha) / math.sqrt(1 - 2 * alpha) * r
    out = run(geometric_median(max_iter=500, ftol=1e-10), shuffled(data.draw, honest, byzantine))
    # a little slack: the iterations stop near, not at, the median
    assert np.linalg.norm(out.astype(np.float64) - z) <= bound * 1.01 + 1e-3


@SETTINGS
@given(st.integers(2, 9), st.integers(1, 5), st.floats(0.1, 10), st.data())
def test_one_client_moves_centered_clipping_by_at_most_2_tau_over_n(n, d, tau, data):
    # each clipped offset has norm <= tau: swapping one client's update for any other
    # changes their mean, hence the step, by at most 2 tau / n
    rows = data.draw(matrix(n, d, honest_values))
    other = data.draw(matrix(1, d, any_values))
    state = data.draw(matrix(1, d, honest_values))[0]
    agg = centered_clip(tau=tau, iterations=1)
    a, _ = agg.aggregate(updates(rows), state)
    swapped = rows.copy()
    swapped[0] = other[0]
    b, _ = agg.aggregate(updates(swapped), state)
    moved = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))
    assert moved <= 2 * tau / n * (1 + 1e-5) + 1e-4


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 6), st.floats(0.01, 100), st.data())
def test_norm_bound_output_is_within_max_norm_and_the_fold_agrees(n, d, max_norm, data):
    rows = data.draw(matrix(n, d, any_values))
    weights = data.draw(st.lists(st.integers(1, 100), min_size=n, max_size=n))
    agg = norm_bound(max_norm=max_norm)
    ups = updates(rows, weights)
    out, _ = agg.aggregate(ups, None)
    assert np.linalg.norm(out.astype(np.float64)) <= max_norm * (1 + 1e-6)
    stream, _ = fold_all(agg, ups, d, None)
    np.testing.assert_allclose(stream, out, rtol=1e-6, atol=1e-6 * max_norm)


@SETTINGS
@given(st.integers(1, 10), st.integers(1, 5), st.data())
def test_coordinatewise_rules_are_exactly_permutation_invariant(n, d, data):
    # both sort every coordinate before reducing it, so even the float rounding is the
    # same in any order (with nothing trimmed, k = 0, the trimmed mean is a plain mean,
    # whose rounding depends on the order: n >= 5 keeps k >= 1 here)
    rows = data.draw(matrix(n, d, any_values))
    order = data.draw(st.permutations(range(n)))
    np.testing.assert_array_equal(run(median(), rows), run(median(), rows[order]))
    if n >= 5:
        agg = trimmed_mean(trim_ratio=0.2)
        np.testing.assert_array_equal(run(agg, rows), run(agg, rows[order]))
