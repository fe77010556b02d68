import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.aggregators.mean import fold_all, weighted_mean
from fedlake.core.update import ClientUpdate, validate_update


def upd(cid, delta, w):
    return ClientUpdate(cid, {"delta": np.asarray(delta, np.float32)}, float(w))


def test_weighted_mean_exact_numbers():
    agg = weighted_mean()
    ups = [upd("a", [1.0, 0.0], 1), upd("b", [0.0, 4.0], 3)]
    v, _ = agg.aggregate(ups, agg.init(2))
    np.testing.assert_array_equal(v, np.array([0.25, 3.0], np.float32))
    u, _ = weighted_mean(uniform=True).aggregate(ups, None)
    np.testing.assert_array_equal(u, np.array([0.5, 2.0], np.float32))


def test_streaming_fold_equals_batch_and_is_linear():
    rng = np.random.default_rng(0)
    ups = [upd(str(i), rng.normal(size=50), rng.integers(1, 100)) for i in range(40)]
    agg = weighted_mean()
    assert agg.linear and agg.fold is not None
    batch, _ = agg.aggregate(ups, None)
    stream, _ = fold_all(agg, ups, 50, None)
    np.testing.assert_allclose(stream, batch, rtol=1e-6, atol=1e-7)


def test_fold_memory_is_one_vector():
    agg = weighted_mean()
    acc = agg.fold.start(10)
    for i in range(1000):
        acc = agg.fold.add(acc, upd(str(i), np.full(10, i), 1))
    assert acc.total.shape == (10,) and acc.count == 1000
    v, _ = agg.fold.result(acc, None)
    np.testing.assert_allclose(v, 499.5)


def test_empty_cohort_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        weighted_mean().aggregate([], None)
    with pytest.raises(ValueError, match="empty"):
        fold_all(weighted_mean(), [], 3, None)


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(6))))
def test_permutation_invariance(order):
    rng = np.random.default_rng(1)
    ups = [upd(str(i), rng.normal(size=8), i + 1) for i in range(6)]
    a, _ = weighted_mean().aggregate(ups, None)
    b, _ = weighted_mean().aggregate([ups[i] for i in order], None)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_identical_inputs_give_that_input():
    ups = [upd(str(i), [1.5, -2.0], i + 1) for i in range(5)]
    v, _ = weighted_mean().aggregate(ups, None)
    np.testing.assert_allclose(v, [1.5, -2.0])


@pytest.mark.parametrize(
    ("delta", "weight", "reason"),
    [
        (np.array([np.nan, 0], np.float32), 1, "non-finite"),
        (np.array([np.inf, 0], np.float32), 1, "non-finite"),
        (np.zeros(3, np.float32), 1, "shape"),
        (np.zeros(2, np.float64), 1, "dtype"),
        (np.zeros(2, np.float32), 0, "weight"),
    ],
)
def test_validate_update_reasons(delta, weight, reason):
    u = ClientUpdate("x", {"delta": delta}, weight)
    assert reason in validate_update(u, 2)


def test_validate_update_accepts_good_one():
    assert validate_update(upd("x", [0.0, 1.0], 2), 2) is None
