"""The mergeable quantile sketch: bucket accuracy, exact merges, quantiles against numpy's."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.data.preprocess.sketch import (
    ZERO_BAND,
    Sketch,
    gamma_of,
    merge_sketches,
    sketch_of,
)

ACCURACIES = st.sampled_from([0.001, 0.01, 0.05, 0.2])
# Magnitudes well away from the zero band (values there count as 0, an absolute error).
VALUE = st.one_of(
    st.just(0.0),
    st.floats(1e-6, 1e12) | st.floats(-1e12, -1e-6),
)
VALUES = st.lists(VALUE, min_size=1, max_size=60)
QS = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]
SLACK = 1e-9  # float rounding at bucket edges


def _close(got: float, true: float, accuracy: float) -> bool:
    return abs(got - true) <= (accuracy + SLACK) * abs(true) + 1e-300


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_gamma_of_refuses_accuracy_outside_0_1(bad: float) -> None:
    with pytest.raises(ValueError, match=r"relative_accuracy must be in \(0, 1\)"):
        gamma_of(bad)


def test_gamma_is_the_ratio_of_a_bucket_of_relative_width_2a() -> None:
    g = gamma_of(0.01)
    assert g == pytest.approx(1.01 / 0.99)
    # The representative 2g^i/(g+1) of (g^(i-1), g^i] is within 1% of both ends.
    rep = 2 * g / (g + 1)
    assert rep / 1.0 == pytest.approx(1.01) and rep / g == pytest.approx(0.99)


def test_sketch_of_counts_signs_zeros_and_skips_nan() -> None:
    x = np.array([3.0, -2.0, 0.0, 5e-10, -5e-10, np.nan, np.inf, 3.0])
    sk = sketch_of(x, relative_accuracy=0.01)
    assert sk.count == 6.0  # NaN and inf are not values
    assert sk.zero == 3.0  # 0 and the two inside the zero band
    assert sum(sk.positive.values()) == 2.0 and len(sk.positive) == 1
    assert sum(sk.negative.values()) == 1.0
    assert all(isinstance(k, int) for k in [*sk.positive, *sk.negative])


def test_empty_sketch_has_no_quantiles_or_moments() -> None:
    sk = sketch_of(np.array([np.nan]), relative_accuracy=0.01)
    assert sk.count == 0.0
    with pytest.raises(ValueError, match="no quantiles"):
        sk.quantiles([0.5])
    with pytest.raises(ValueError, match="no moments"):
        sk.moments()


@pytest.mark.parametrize("q", [-0.01, 1.01, float("nan")])
def test_quantile_outside_0_1_is_refused(q: float) -> None:
    sk = sketch_of(np.array([1.0, 2.0]), relative_accuracy=0.01)
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\]"):
        sk.quantiles([q])


def test_values_are_ascending_representatives() -> None:
    x = np.array([-100.0, -1.0, 0.0, 1.0, 100.0])
    reps, counts = sketch_of(x, relative_accuracy=0.01).values()
    assert np.all(np.diff(reps) > 0)
    assert counts.tolist() == [1.0] * 5
    assert np.allclose(reps, x, rtol=0.01 + SLACK)


def test_quantile_zero_is_the_smallest_value_not_the_empty_zero_bucket() -> None:
    # Regression: q = 0 used to land on the always-present (empty) zero bucket: 0.0.
    sk = sketch_of(np.array([5.0, 6.0, 7.0]), relative_accuracy=0.01)
    low, high = sk.quantiles([0.0, 1.0])
    assert _close(low, 5.0, 0.01) and _close(high, 7.0, 0.01)


def test_noised_negative_buckets_hold_no_value() -> None:
    g = gamma_of(0.01)
    sk = Sketch(relative_accuracy=0.01, positive={10: -2.0, 20: 3.0}, negative={}, zero=-0.5)
    rep20 = 2 * g**20 / (g + 1)
    assert sk.quantiles([0.0, 0.5, 1.0]) == [pytest.approx(rep20)] * 3


def test_merge_refuses_nothing_and_mixed_accuracy() -> None:
    with pytest.raises(ValueError, match="at least one sketch"):
        merge_sketches([])
    a = sketch_of(np.array([1.0]), relative_accuracy=0.01)
    b = sketch_of(np.array([1.0]), relative_accuracy=0.02)
    with pytest.raises(ValueError, match="different relative accuracy"):
        merge_sketches([a, b])


@given(VALUES, ACCURACIES)
def test_each_value_lands_in_a_bucket_within_the_accuracy(values: list[float], a: float) -> None:
    for v in values:
        reps, counts = sketch_of(np.array([v]), relative_accuracy=a).values()
        (rep,) = reps[counts > 0]
        assert _close(float(rep), v, a)


@settings(max_examples=60)
@given(VALUES, ACCURACIES)
def test_quantiles_within_accuracy_of_numpy(values: list[float], a: float) -> None:
    x = np.asarray(values)
    got = sketch_of(x, relative_accuracy=a).quantiles(QS)
    # The sketch's rank rule is the inverse empirical CDF (smallest x with F(x) >= q); at a
    # rank exactly on an order statistic, float rounding may pick either neighbour.
    for q, g in zip(QS, got, strict=True):
        lo = float(np.quantile(x, q, method="lower"))
        hi = float(np.quantile(x, q, method="higher"))
        inv = float(np.quantile(x, q, method="inverted_cdf"))
        assert _close(g, inv, a) or _close(g, lo, a) or _close(g, hi, a), (q, g, inv)


@given(VALUES, ACCURACIES)
def test_quantiles_with_distinct_ranks_match_inverted_cdf(values: list[float], a: float) -> None:
    x = np.asarray(values)
    qs = [(k - 0.5) / len(x) for k in range(1, len(x) + 1)]  # never on a rank boundary
    got = sketch_of(x, relative_accuracy=a).quantiles(qs)
    for g, v in zip(got, np.sort(x).tolist(), strict=True):
        assert _close(g, v, a)


@given(VALUES, ACCURACIES)
def test_moments_within_accuracy(values: list[float], a: float) -> None:
    x = np.asarray(values)
    mean, var = sketch_of(x, relative_accuracy=a).moments()
    # Each representative is x_i (1 + e_i), |e_i| <= a: the mean moves by at most a mean|x|,
    # the standard deviation (an L2 norm of centred values) by at most a rms(x).
    scale = float(np.mean(np.abs(x)))
    rms = float(np.sqrt(np.mean(x * x)))
    assert abs(mean - x.mean()) <= (a + SLACK) * scale + 1e-9 * rms
    assert abs(math.sqrt(var) - x.std()) <= (a + SLACK) * rms + 1e-6 * rms


@given(st.lists(VALUES, min_size=1, max_size=5), ACCURACIES, st.randoms(use_true_random=False))
def test_merge_of_parts_is_the_sketch_of_the_whole(parts: list[list[float]], a, rnd) -> None:
    whole = sketch_of(np.concatenate([np.asarray(p) for p in parts]), relative_accuracy=a)
    sketches = [sketch_of(np.asarray(p), relative_accuracy=a) for p in parts]
    assert merge_sketches(sketches) == whole
    rnd.shuffle(sketches)
    assert merge_sketches(sketches) == whole
    half = len(sketches) // 2
    if half:  # merging merged sketches (a tree of servers) changes nothing either
        nested = [merge_sketches(sketches[:half]), merge_sketches(sketches[half:])]
        assert merge_sketches(nested) == whole


def test_merge_adds_float_counts() -> None:
    a = Sketch(0.01, positive={1: 0.5, 2: 1.0}, negative={3: 2.0}, zero=0.25)
    b = Sketch(0.01, positive={2: 1.5}, negative={}, zero=-0.25)
    m = merge_sketches([a, b])
    assert dict(m.positive) == {1: 0.5, 2: 2.5}
    assert dict(m.negative) == {3: 2.0}
    assert m.zero == 0.0


def test_zero_band_is_an_absolute_error() -> None:
    sk = sketch_of(np.array([ZERO_BAND / 2, -ZERO_BAND / 2]), relative_accuracy=0.01)
    assert sk.zero == 2.0 and sk.quantiles([0.5]) == [0.0]
