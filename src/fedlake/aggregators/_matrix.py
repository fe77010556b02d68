"""Cache-friendly building blocks on a cohort matrix (n clients x d parameters)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Column blocks of about this many values: big enough for BLAS and numpy's loops, small
# enough that per-block temporaries stay in cache and memory never grows with d.
BLOCK_VALUES = 1 << 21


def column_blocks(n: int, d: int) -> range:
    """Start offsets of the column blocks of an (n, d) matrix."""
    return range(0, d, max(256, BLOCK_VALUES // max(n, 1)))


def columnwise(matrix: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a per-coordinate reduction ``fn`` ((b, n) block -> (b,)) over column blocks.

    ``fn`` receives a block *transposed and contiguous*: one row per coordinate holding
    the n clients' values, so partitions and sorts run on contiguous memory.
    """
    n, d = matrix.shape
    out = np.empty(d, dtype=np.float32)
    step = column_blocks(n, d).step
    for start in range(0, d, step):
        block = np.ascontiguousarray(matrix[:, start : start + step].T)
        out[start : start + step] = fn(block)
    return out


def pairwise_sq_distances(matrix: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``matrix`` as an (n, n) float64 matrix.

    One Gram matrix (BLAS) instead of n^2 vector differences: ``|a-b|^2 = |a|^2 + |b|^2 -
    2 a.b``. Rows are first centred on the row of median norm, and the Gram matrix is
    computed in float64 over column blocks: rounding is relative to the spread of the
    updates around a typical one, not to the size of the updates; products of large
    float32 values (1e20 and up) cannot overflow; extra memory is one block, not a copy
    of the cohort. (Centring on the mean would carry one huge update's size into every
    centred row, and its rounding would swamp the distances between all the others; the
    Gram entry of two ordinary rows never touches a huge row.)
    """
    n, d = matrix.shape
    centre = matrix[int(np.argsort(row_sq_norms(matrix), kind="stable")[(n - 1) // 2])]
    gram = np.zeros((n, n), dtype=np.float64)
    step = column_blocks(n, d).step
    for start in range(0, d, step):
        centred = matrix[:, start : start + step].astype(np.float64)
        centred -= centre[start : start + step]
        gram += centred @ centred.T
    sq = np.diag(gram).copy()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def row_sq_norms(matrix: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row of ``matrix`` (float64, O(block) memory)."""
    n, d = matrix.shape
    sq = np.zeros(n, dtype=np.float64)
    step = column_blocks(n, d).step
    for start in range(0, d, step):
        block = matrix[:, start : start + step].astype(np.float64)
        sq += np.einsum("ij,ij->i", block, block)
    return sq


def row_distances(matrix: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of ``matrix`` to ``centre`` (float64, O(block) memory)."""
    n, d = matrix.shape
    sq = np.zeros(n, dtype=np.float64)
    step = column_blocks(n, d).step
    centre = np.asarray(centre, dtype=np.float64)
    for start in range(0, d, step):
        # float64: a float32 difference of two large values of opposite sign overflows
        diff = matrix[:, start : start + step].astype(np.float64) - centre[start : start + step]
        sq += np.einsum("ij,ij->i", diff, diff)
    return np.sqrt(sq)


def weighted_rows(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights @ matrix`` in float64 (one BLAS gemv per column block)."""
    n, d = matrix.shape
    w = np.asarray(weights, dtype=np.float64)
    out = np.empty(d, dtype=np.float64)
    step = column_blocks(n, d).step
    for start in range(0, d, step):
        out[start : start + step] = w @ matrix[:, start : start + step].astype(np.float64)
    return out
