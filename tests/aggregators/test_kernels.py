"""The compiled weighted sums (the mean's batch pass and its fold's step) and their numpy
stand-ins: float64-level precision, the same results either way, no temporaries of size d."""

import math
import tracemalloc

import numpy as np
import pytest

from fedlake.aggregators import _kernels
from fedlake.aggregators._matrix import scaled_add, weighted_rows
from fedlake.aggregators.mean import weighted_mean
from fedlake.core.update import ClientUpdate

EPS64 = 2.0**-53


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """Run a test through the compiled loop and through the numpy code it stands in for."""
    if request.param == "numpy":
        monkeypatch.setattr(_kernels, "ENABLED", False)
    else:
        assert _kernels._compiled() is not None, "numba is a dependency: the loop must compile"
    return request.param


def exact_weighted_sum(rows: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the correctly rounded sum of the float64 products, and sum |w x|."""
    products = w[:, None] * rows.astype(np.float64)
    exact = np.array([math.fsum(col) for col in products.T])
    return exact, np.abs(products).sum(axis=0)


def cancelling_cohort(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of +-1e6 that almost cancel under the weights, plus ordinary values."""
    rng = np.random.default_rng(seed)
    big = rng.choice([-1e6, 1e6], size=(n, d)) * (1 + rng.random((n, d)))
    rows = (big + rng.normal(size=(n, d))).astype(np.float32)
    return rows, rng.integers(1, 1000, size=n).astype(np.float64)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 15, 16, 23])  # the 8-, 4-, 2-, 1-row passes
def test_weighted_sum_has_float64_level_error(path, n, monkeypatch):
    monkeypatch.setattr(_kernels, "ACC_VALUES", 64)  # several column blocks
    rows, w = cancelling_cohort(n, 333, seed=n)
    exact, size = exact_weighted_sum(rows, w)
    got = weighted_rows(list(rows), w)
    # recursive float64 summation: |error| <= (n - 1) u sum |w x|, plus the reference's u
    assert np.all(np.abs(got - exact) <= (n * EPS64 + 1e-300) * size)
    mean = weighted_rows(list(rows), w, divide_by=w.sum(), dtype=np.float32)
    np.testing.assert_array_equal(mean, (got / w.sum()).astype(np.float32))


def test_the_precision_bound_would_catch_a_float32_accumulation():
    # the bound above is about 2^29 times tighter than what float32 sums achieve
    n = 16
    rows, w = cancelling_cohort(n, 333, seed=0)
    exact, size = exact_weighted_sum(rows, w)
    float32_sum = (w.astype(np.float32) @ rows).astype(np.float64)
    assert np.any(np.abs(float32_sum - exact) > n * EPS64 * size)


def test_compiled_and_numpy_agree_exactly_on_small_integers(monkeypatch):
    # every partial sum is an exact float64 integer: the summation order cannot matter
    rng = np.random.default_rng(1)
    rows = list(rng.integers(-1000, 1000, size=(13, 5000)).astype(np.float32))
    w = rng.integers(1, 50, size=13).astype(np.float64)
    compiled = weighted_rows(rows, w)
    monkeypatch.setattr(_kernels, "ENABLED", False)
    np.testing.assert_array_equal(compiled, weighted_rows(rows, w))
    np.testing.assert_array_equal(compiled, w @ np.array(rows, dtype=np.float64))


def test_read_only_strided_and_float64_rows_give_the_same(path):
    rng = np.random.default_rng(2)
    matrix = rng.integers(-100, 100, size=(6, 2 * 999)).astype(np.float32)
    w = np.arange(1.0, 7.0)
    expected = w @ matrix.astype(np.float64)
    frozen = [np.frombuffer(r.tobytes(), dtype=np.float32) for r in matrix]  # as decoded
    assert not frozen[0].flags.writeable
    np.testing.assert_array_equal(weighted_rows(frozen, w), expected)
    np.testing.assert_array_equal(weighted_rows(matrix, w), expected)
    strided = [r[::2] for r in matrix]  # not contiguous: the numpy code runs
    np.testing.assert_array_equal(weighted_rows(strided, w), w @ matrix[:, ::2].astype(np.float64))
    wide = [r.astype(np.float64) + 0.25 for r in matrix]  # float64 rows: never narrowed
    np.testing.assert_array_equal(weighted_rows(wide, w), expected + 0.25 * w.sum())


def test_rows_of_weight_zero_are_not_read(path):
    # Multi-Krum's unselected updates: 0 * inf would make the sum NaN
    rows = [np.full(4, np.inf, np.float32), np.arange(4, dtype=np.float32)]
    np.testing.assert_array_equal(weighted_rows(rows, np.array([0.0, 2.0])), [0, 2, 4, 6])
    np.testing.assert_array_equal(weighted_rows(rows, np.zeros(2)), np.zeros(4))


def test_weights_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\), got \(3,\)"):
        weighted_rows([np.zeros(3, np.float32)] * 2, np.ones(3))


def test_the_compiled_call_keeps_no_cohort_alive():
    rows = [np.ones(10, np.float32)] * 3
    weighted_rows(rows, np.ones(3))
    assert len(_kernels._LISTS.rows) == 0


def peak_extra(fn) -> tuple[object, int]:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        out = fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return out, peak


def test_the_mean_allocates_its_output_and_one_block(monkeypatch):
    # the previous pass converted column blocks of 2M values to float64 (16 MB) and
    # divided a float64 copy of the result: several times this bound
    n, d = 40, 300_000
    rng = np.random.default_rng(3)
    ups = [
        ClientUpdate(str(i), {"delta": rng.normal(size=d).astype(np.float32)}, 1.0 + i)
        for i in range(n)
    ]
    agg = weighted_mean()
    agg.aggregate(ups[:9], None)  # compiled and warm
    out, peak = peak_extra(lambda: agg.aggregate(ups, None)[0])
    assert out.dtype == np.float32
    assert peak <= out.nbytes + 8 * _kernels.ACC_VALUES + (64 << 10)


def test_the_fold_adds_an_update_without_a_temporary_of_its_size(path):
    # the previous step, total += w * float64(x), made two float64 temporaries of size d
    d = 1_000_000
    x = np.random.default_rng(4).normal(size=d).astype(np.float32)
    total = np.zeros(d)
    scaled_add(total, 3.0, x)  # compiled and warm
    _, peak = peak_extra(lambda: scaled_add(total, 2.0, x))
    assert peak <= 8 * _kernels.ACC_VALUES + (128 << 10)  # a block, numpy's cast buffers
    np.testing.assert_array_equal(total, 5.0 * x.astype(np.float64))


def test_scaled_add_refuses_a_vector_of_another_size(path):
    with pytest.raises(ValueError, match="shape"):
        scaled_add(np.zeros(3), 1.0, np.zeros(2, np.float32))


def test_fold_matches_batch_to_float64_level(path):
    rows, w = cancelling_cohort(11, 500, seed=5)
    ups = [
        ClientUpdate(str(i), {"delta": r}, float(x))
        for i, (r, x) in enumerate(zip(rows, w, strict=True))
    ]
    agg = weighted_mean()
    acc = agg.fold.start(500)
    for u in ups:
        acc = agg.fold.add(acc, u)
    exact, size = exact_weighted_sum(rows, w)
    assert np.all(np.abs(acc.total - exact) <= 11 * EPS64 * size)
