"""Compiled loops (numba) behind a cohort's weighted sums (the weighted mean and its fold)
and behind its pairwise distances (the centred blocks of the Gram matrix).

Why our own kernel: summing n float32 vectors with float64 weights into float64 is a
pure memory-bound pass, and neither numpy nor BLAS has one call that reads float32 and
accumulates in float64. Every library route first converts a block of rows to a float64
copy (``np.stack(dtype=float64)`` + ``dgemv``, or ``copyto`` + ``daxpy`` per row): that copy
is written and read again, and the rows are read in short slices, which stops the
hardware prefetcher at every page. Measured on the benchmark's cohorts (2-core AMD EPYC,
one thread): 3-6 GB/s for the library routes, 13-21 GB/s for this loop, which converts in
registers, adds 8 rows per pass over a cache-resident float64 accumulator and streams 8
long row slices at once. Where numba is missing the callers use their numpy code.

Both loops compute float64 products of the float32 values and sum them in float64, as the
library routes do; only the order of the float64 additions differs (8 rows at a time).

The centring loop has a like reason: numpy gathers a block of n rows (``np.stack``) and
centres it (``block - centre``) in two passes with a temporary, or in n calls per block
whose overhead outweighs a cache-sized block's work; here it is one call and one pass,
the centred block written once into a cache-resident buffer that BLAS then reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

# Columns per pass: a float64 accumulator of 128 KiB stays in L2 while the rows stream
# through it. (16K-64K measured alike; 128 KiB leaves room in a 512 KiB L2.)
ACC_VALUES = 1 << 14
# Tests set this to False to run the numpy code the callers fall back to.
ENABLED = True


def _weighted_sum(
    rows: Any, weights: np.ndarray, divisor: float, acc: np.ndarray, out: np.ndarray
) -> None:
    """``out[:] = (sum_i weights[i] * rows[i]) / divisor``, summed in float64 over column
    blocks of ``len(acc)``: 8 rows per pass over a block, the last n % 8 in passes of 4, 2
    and 1 (a pass per row would re-read the accumulator and stream one short slice)."""
    n = len(rows)
    d = out.shape[0]
    b = acc.shape[0]
    for start in range(0, d, b):
        stop = min(start + b, d)
        m = stop - start
        acc[:m] = 0.0
        i = 0
        while i + 8 <= n:
            r0, r1 = rows[i][start:stop], rows[i + 1][start:stop]
            r2, r3 = rows[i + 2][start:stop], rows[i + 3][start:stop]
            r4, r5 = rows[i + 4][start:stop], rows[i + 5][start:stop]
            r6, r7 = rows[i + 6][start:stop], rows[i + 7][start:stop]
            w0, w1, w2, w3 = weights[i], weights[i + 1], weights[i + 2], weights[i + 3]
            w4, w5, w6, w7 = weights[i + 4], weights[i + 5], weights[i + 6], weights[i + 7]
            for k in range(m):
                acc[k] += (
                    (w0 * np.float64(r0[k]) + w1 * np.float64(r1[k]))
                    + (w2 * np.float64(r2[k]) + w3 * np.float64(r3[k]))
                ) + (
                    (w4 * np.float64(r4[k]) + w5 * np.float64(r5[k]))
                    + (w6 * np.float64(r6[k]) + w7 * np.float64(r7[k]))
                )
            i += 8
        if i + 4 <= n:
            r0, r1 = rows[i][start:stop], rows[i + 1][start:stop]
            r2, r3 = rows[i + 2][start:stop], rows[i + 3][start:stop]
            w0, w1, w2, w3 = weights[i], weights[i + 1], weights[i + 2], weights[i + 3]
            for k in range(m):
                acc[k] += (w0 * np.float64(r0[k]) + w1 * np.float64(r1[k])) + (
                    w2 * np.float64(r2[k]) + w3 * np.float64(r3[k])
                )
            i += 4
        if i + 2 <= n:
            r0, r1 = rows[i][start:stop], rows[i + 1][start:stop]
            w0, w1 = weights[i], weights[i + 1]
            for k in range(m):
                acc[k] += w0 * np.float64(r0[k]) + w1 * np.float64(r1[k])
            i += 2
        if i < n:
            r0, w0 = rows[i][start:stop], weights[i]
            for k in range(m):
                acc[k] += w0 * np.float64(r0[k])
        for k in range(m):
            out[start + k] = acc[k] / divisor


def _scaled_add(total: np.ndarray, weight: float, x: np.ndarray) -> None:
    """``total += weight * x`` in float64, in place, without a temporary."""
    for k in range(total.shape[0]):
        total[k] += weight * np.float64(x[k])


def _centred_block(rows: Any, centre: np.ndarray, start: int, out: np.ndarray) -> None:
    """``out[i, :] = rows[i][start:start + b] - centre[start:start + b]`` in float32, as
    numpy rounds it (slices, so the loop vectorises)."""
    n, b = out.shape
    c = centre[start : start + b]
    for i in range(n):
        r = rows[i][start : start + b]
        o = out[i]
        for k in range(b):
            o[k] = r[k] - c[k]


@cache
def _compiled() -> tuple[Callable[..., Any], ...] | None:
    """The loops compiled (on first use: importing numba costs a fraction of a
    second), and the typed-list row type; None where numba is not installed."""
    try:
        from numba import njit, types
    except ImportError:  # pragma: no cover - numba is a dependency; a platform without a wheel
        return None
    # No fastmath: the additions keep their order and NaN/Inf propagate as in numpy.
    try:  # machine code cached beside the sources (or in NUMBA_CACHE_DIR)
        kernels = _jit_all(njit(cache=True, nogil=True))
    except RuntimeError:  # no writable cache location (read-only install): compile per process
        kernels = _jit_all(njit(cache=False, nogil=True))
    # Read-only rows (decoded from bytes) and writable ones share one list type.
    return (*kernels, types.Array(types.float32, 1, "C", readonly=True))


def _jit_all(jit: Callable[[Callable[..., Any]], Callable[..., Any]]) -> tuple[Any, ...]:
    """weighted_sum, scaled_add, centred_block, in that order, through ``jit``."""
    return tuple(jit(fn) for fn in (_weighted_sum, _scaled_add, _centred_block))


def _as_float32_row(x: object) -> np.ndarray | None:
    """``x`` as a 1-D C-contiguous float32 array without copying, or None when it is not one."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 1:
        return None
    return x if x.flags.c_contiguous else None


def weighted_sum(
    rows: Sequence[np.ndarray] | np.ndarray, weights: np.ndarray, divisor: float, out: np.ndarray
) -> bool:
    """Write ``(weights @ rows) / divisor`` into ``out`` (float32 or float64), summed in
    float64; False (``out`` untouched) where the compiled loop cannot run: no numba, or a
    row that is not a contiguous 1-D float32 vector."""
    kernels = _compiled() if ENABLED else None
    if kernels is None or out.dtype not in (np.float32, np.float64):
        return False
    typed = _typed_rows(kernels, rows, out.shape[0])
    if typed is None:
        return False
    try:
        acc = np.empty(min(ACC_VALUES, max(out.shape[0], 1)), dtype=np.float64)
        kernels[0](typed, np.ascontiguousarray(weights, dtype=np.float64), divisor, acc, out)
    finally:
        typed.clear()  # holds no cohort between calls
    return True


_LISTS = threading.local()


def _row_list(row_type: Any) -> Any:
    """This thread's empty typed list of rows, made once: making one costs about 0.2 ms
    (a compiled call), as much as the whole mean of 10 updates of 10^5 parameters."""
    rows = getattr(_LISTS, "rows", None)
    if rows is None:
        from numba.typed import List

        rows = _LISTS.rows = List.empty_list(row_type)
    return rows


def scaled_add(total: np.ndarray, weight: float, x: np.ndarray) -> bool:
    """``total += weight * x`` (float64 ``total``, float32 ``x``) in place; False (``total``
    untouched) where the compiled loop cannot run."""
    kernels = _compiled() if ENABLED else None
    row = _as_float32_row(x)
    if kernels is None or row is None or total.dtype != np.float64 or total.shape != row.shape:
        return False
    kernels[1](total, float(weight), row)
    return True


def _typed_rows(
    kernels: tuple[Any, ...], rows: Sequence[np.ndarray] | np.ndarray, length: int | None = None
) -> Any:
    """This thread's typed list filled with ``rows``, or None (the list left empty) where a
    row is not a contiguous 1-D float32 vector of ``length`` values (default: the first
    row's; the loops do not check bounds). The caller clears it after its call."""
    typed = _row_list(kernels[-1])
    for r in rows:
        if length is None:
            length = int(np.shape(r)[0]) if np.ndim(r) == 1 else -1
        if _as_float32_row(r) is None or r.shape[0] != length:
            typed.clear()
            return None
        typed.append(r)
    return typed


@contextmanager
def centring(rows: Sequence[np.ndarray] | np.ndarray, centre: np.ndarray) -> Iterator[Any]:
    """A function ``centre_into(start, out)`` that fills the float32 ``out`` (n, b) with
    columns ``start:start + b`` of every row minus the centre's and returns True, or None
    where the loop cannot run. The rows are typed once for all blocks (a typed list costs
    about a microsecond per row to fill, as much as centring a small block)."""
    kernels = _compiled() if ENABLED else None
    c = _as_float32_row(centre)
    typed = None if kernels is None or c is None else _typed_rows(kernels, rows, len(c))
    if kernels is None or c is None or typed is None:
        yield None
        return
    n, d, loop = len(typed), len(c), kernels[2]

    def centre_into(start: int, out: np.ndarray) -> bool:
        ok = out.dtype == np.float32 and out.flags.c_contiguous and out.ndim == 2
        if not (ok and out.shape[0] == n and 0 <= start <= d - out.shape[1]):
            raise ValueError(f"a block of shape {out.shape} at column {start} of ({n}, {d})")
        loop(typed, c, start, out)
        return True

    try:
        yield centre_into
    finally:
        typed.clear()  # holds no cohort between calls
