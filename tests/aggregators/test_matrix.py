"""Blocked building blocks: pairwise distances, row distances, column-wise reductions."""

import numpy as np
import pytest
from aggregators.cohorts import run

from fedlake.aggregators import _kernels, _matrix, krum
from fedlake.aggregators._matrix import (
    column_blocks,
    columnwise,
    pairwise_sq_distances,
    row_distances,
    weighted_rows,
)


def direct_sq_distances(matrix: np.ndarray) -> np.ndarray:
    x = matrix.astype(np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)


def test_pairwise_exact_on_small_integers():
    # (0,0), (3,4), (6,8): squared distances 25, 100, 25
    m = np.array([[0, 0], [3, 4], [6, 8]], np.float32)
    np.testing.assert_array_equal(
        pairwise_sq_distances(m), [[0, 25, 100], [25, 0, 25], [100, 25, 0]]
    )


def test_pairwise_is_symmetric_with_a_zero_diagonal():
    m = np.random.default_rng(0).normal(size=(9, 33)).astype(np.float32)
    dist = pairwise_sq_distances(m)
    assert dist.dtype == np.float64
    np.testing.assert_array_equal(dist, dist.T)
    np.testing.assert_array_equal(np.diag(dist), 0.0)


@pytest.mark.parametrize("scale", [1e6, 1e20, 1e30, 3e38])
def test_a_huge_update_does_not_blur_the_distances_between_the_others(scale):
    # The Gram entry of two ordinary updates must not depend on a third, huge one: with a
    # centre dragged towards the huge update, every centred row would carry its size and
    # the rounding of |a|^2 + |b|^2 - 2 a.b (about 1e-16 * scale^2) would swamp the
    # ordinary distances (about 1e2 here). Blocks of ordinary values multiply in float32
    # (relative 1e-6), blocks with a centred value above 1e15 in float64.
    rng = np.random.default_rng(1)
    honest = rng.normal(size=(8, 50)).astype(np.float32)
    bad = np.full((1, 50), scale, np.float32)
    dist = pairwise_sq_distances(np.vstack([honest[:3], bad, honest[3:]]))
    keep = [0, 1, 2, 4, 5, 6, 7, 8]
    rtol = 2e-6 if scale < _matrix.SAFE_FLOAT32 else 1e-9
    np.testing.assert_allclose(dist[np.ix_(keep, keep)], direct_sq_distances(honest), rtol=rtol)
    assert np.all(np.isfinite(dist))


@pytest.mark.parametrize("scale", [1e10, 1e30])
def test_krum_ranks_the_honest_updates_as_if_the_huge_one_were_absent(scale):
    # The huge update is every honest update's farthest neighbour, so with it and f = 1
    # the honest scores sum the n - 3 nearest honest distances: Krum on the honest
    # updates alone with f = 0 (n - 1 - 0 - 2 = n - 3 neighbours). Same winner.
    rng = np.random.default_rng(2)
    honest = rng.normal(size=(9, 20)).astype(np.float32)
    bad = np.full((1, 20), scale, np.float32)
    expected = run(krum(f=0), honest)
    np.testing.assert_array_equal(run(krum(f=1), np.vstack([bad, honest])), expected)


def test_pairwise_precision_with_a_large_common_offset():
    # all near 1e4, spread 1e-2: the squared norms are 1e8 * d, the distances 1e-4 * d
    rng = np.random.default_rng(3)
    m = (1e4 + 1e-2 * rng.normal(size=(7, 40))).astype(np.float32)
    expected = direct_sq_distances(m)
    np.testing.assert_allclose(pairwise_sq_distances(m), expected, rtol=1e-6, atol=1e-9)


def test_pairwise_over_several_column_blocks(monkeypatch):
    # small blocks: the Gram matrix is accumulated over many of them
    monkeypatch.setattr(_matrix, "BLOCK_VALUES", 1024)
    monkeypatch.setattr(_matrix, "GRAM_BLOCK_VALUES", 1024)
    n, d = 5, 3000
    assert len(column_blocks(n, d)) > 1
    m = np.random.default_rng(4).normal(size=(n, d)).astype(np.float32)
    # float32 products, float64 sums over the blocks: a relative 1e-6
    np.testing.assert_allclose(pairwise_sq_distances(m), direct_sq_distances(m), rtol=2e-6)
    centre = m[0] + 1
    np.testing.assert_allclose(row_distances(m, centre), np.sqrt(((m - centre) ** 2).sum(1)))
    w = np.arange(1, n + 1, dtype=np.float64)
    np.testing.assert_allclose(weighted_rows(m, w), w @ m.astype(np.float64), rtol=1e-12)
    out = columnwise(m, lambda block: block.max(axis=1))
    np.testing.assert_array_equal(out, m.max(axis=0))


def test_row_distances_do_not_overflow_near_the_float32_limit():
    # 3e38 - (-3e38) overflows float32; in float64 the distance is 6e38 * sqrt(2)
    m = np.array([[3e38, -3e38]], np.float32)
    centre = np.array([-3e38, 3e38], np.float32)
    expected = 2 * float(np.float32(3e38)) * np.sqrt(2)
    np.testing.assert_allclose(row_distances(m, centre), [expected], rtol=1e-12)


def test_column_blocks_cover_every_column_once():
    for n, d in [(1, 1), (3, 10), (1000, 10_000), (7, 1 << 22)]:
        blocks = column_blocks(n, d)
        covered = sum(min(start + blocks.step, d) - start for start in blocks)
        assert covered == d and blocks.step >= 256


def test_kernels_give_the_same_on_a_list_of_vectors_as_on_a_matrix(monkeypatch):
    monkeypatch.setattr(_matrix, "BLOCK_VALUES", 1024)  # several blocks
    monkeypatch.setattr(_matrix, "GRAM_BLOCK_VALUES", 1024)
    rng = np.random.default_rng(4)
    matrix = rng.normal(size=(7, 3001)).astype(np.float32)
    rows = list(matrix)  # how rules see a cohort: the clients' vectors, never stacked
    np.testing.assert_array_equal(
        _matrix.pairwise_sq_distances(rows), _matrix.pairwise_sq_distances(matrix)
    )
    np.testing.assert_array_equal(
        _matrix.columnwise(rows, lambda b: b.max(axis=1)), matrix.max(axis=0)
    )
    w = rng.random(7)
    np.testing.assert_array_equal(_matrix.weighted_rows(rows, w), _matrix.weighted_rows(matrix, w))
    np.testing.assert_array_equal(
        _matrix.row_distances(rows, matrix[0]), _matrix.row_distances(matrix, matrix[0])
    )


def gram_cohort(kind: str) -> list[np.ndarray]:
    """Seven updates over 3,001 coordinates (blocks of 1,024 and a tail), ordinary or with
    a block that must go to float64: a NaN, an infinity, a huge value, tiny values."""
    rng = np.random.default_rng(5)
    rows = [r for r in rng.normal(size=(7, 3001)).astype(np.float32)]
    if kind == "nan":
        rows[2][1500] = np.nan
    elif kind == "inf":
        rows[4][10] = np.inf
    elif kind == "huge":
        rows[1][2500:] = 3e38
    elif kind == "tiny":
        rows = [r * np.float32(1e-30) for r in rows]
    return rows


@pytest.mark.parametrize("kind", ["ordinary", "nan", "inf", "huge", "tiny"])
def test_compiled_centring_gives_the_numpy_distances_bit_for_bit(kind, monkeypatch):
    # The compiled loop only replaces gather + subtract: the same float32 values reach
    # syrk, so the distances are identical (NaN where numpy's are NaN).
    monkeypatch.setattr(_matrix, "GRAM_BLOCK_VALUES", 7 * 1024)
    assert _kernels._compiled() is not None, "numba is a dependency: the loop must compile"
    rows = gram_cohort(kind)
    # (Updates with NaN/inf are refused before aggregation; here only the paths must agree.)
    with np.errstate(invalid="ignore"):
        compiled = pairwise_sq_distances(rows)
        monkeypatch.setattr(_kernels, "ENABLED", False)
        np.testing.assert_array_equal(compiled, pairwise_sq_distances(rows))
    if kind in ("ordinary", "tiny"):
        scale = 1e-60 if kind == "tiny" else 1.0
        np.testing.assert_allclose(
            compiled, direct_sq_distances(np.vstack(rows)), rtol=2e-6, atol=1e-9 * scale
        )


def test_the_centring_loop_refuses_a_block_out_of_bounds_and_keeps_no_cohort():
    rows = gram_cohort("ordinary")
    with _kernels.centring(rows, rows[0]) as centre_into:
        assert centre_into is not None
        out = np.empty((7, 1024), np.float32)
        assert centre_into(3001 - 1024, out)
        np.testing.assert_array_equal(out[3], rows[3][-1024:] - rows[0][-1024:])
        with pytest.raises(ValueError, match="column 2000"):
            centre_into(2000, out)  # would read past the rows' end
    assert len(_kernels._LISTS.rows) == 0
    with _kernels.centring([r.astype(np.float64) for r in rows], rows[0]) as centre_into:
        assert centre_into is None  # not float32: the numpy stand-in runs


def test_pairwise_allocates_one_block_not_the_cohort():
    import tracemalloc

    rows = list(np.random.default_rng(6).normal(size=(20, 200_000)).astype(np.float32))
    pairwise_sq_distances(rows)  # compile and warm up
    tracemalloc.start()
    pairwise_sq_distances(rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 4 * _matrix.GRAM_BLOCK_VALUES + (256 << 10)  # the block, n x n matrices
