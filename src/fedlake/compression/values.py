"""Value coders: how the kept values of a vector become bytes.

- :func:`float32` and :func:`float16`: raw IEEE values (float32 is lossless).
- :func:`uniform`: ``bits``-bit uniform quantisation between each bucket's min and
  max. Stochastic rounding (the default) rounds up with probability equal to the
  fractional part, so the decoded vector is an unbiased estimate of the input
  (QSGD, Alistarh et al., NeurIPS 2017; the min-max grid of Suresh et al., "Distributed
  Mean Estimation with Limited Communication", ICML 2017, which also works at 1 bit).
  ``stochastic=False`` rounds to the nearest level: deterministic, biased, and at
  8 bits within half a level of the input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fedlake.compression.bitpack import BITS, pack, packed_size, unpack
from fedlake.compression.wire import Reader
from fedlake.core.codec import CodecError

FLOAT32, FLOAT16, STOCHASTIC, NEAREST = 1, 2, 3, 4  # coder tags in the header


class ValueCoder(NamedTuple):
    """Encodes ``count`` float32 values; ``bits`` and ``bucket`` go to the header.

    ``encode`` returns bytes, or a byte view of the values it was given (float32: no copy;
    read it before they change). ``decode`` returns float32 values: a new array, or a
    read-only view into the payload (float32: no copy; the codec copies it once when its
    caller needs an array of its own).
    """

    name: str
    tag: int
    bits: int
    bucket: int
    encode: Callable[[np.ndarray, np.random.Generator], bytes | memoryview]
    decode: Callable[[Reader, int], np.ndarray]
    lossless: bool = False
    contraction: float = 0.0  # worst-case ||decode(encode(x)) - x||^2 / ||x||^2 (expected)

    def size(self, count: int) -> int:
        """Encoded bytes for ``count`` values (the body's value section)."""
        if self.tag == FLOAT32:
            return 4 * count
        if self.tag == FLOAT16:
            return 2 * count
        buckets = -(-count // self.bucket)
        return 8 * buckets + packed_size(count, self.bits)


def _work_dtype(span: np.ndarray, top: int) -> type[np.floating]:
    """float32 when every bucket's span, step and inverse step fit in it; else float64.

    A span beyond float32's range (values near +-3e38) or so tiny that ``top / span``
    overflows would turn into inf and NaN in float32; such vectors take the slower
    float64 path, the rest the fast one. The levels that travel are the same either way
    up to rounding at a level boundary.
    """
    live = span[span > 0]
    if live.size == 0 or (live.max() < 1e38 and top / live.min() < 1e38):
        return np.float32
    return np.float64


def float32() -> ValueCoder:
    """Raw float32 values: lossless."""

    def encode(values: np.ndarray, rng: np.random.Generator) -> memoryview:
        # the values' own bytes when they are contiguous little-endian float32 already
        return np.ascontiguousarray(values, dtype="<f4").data.cast("B")

    def decode(reader: Reader, count: int) -> np.ndarray:
        view = reader.array("<f4", count, "float32 values")
        view.flags.writeable = False  # a view of the payload, never to be written through
        return view.astype(np.float32, copy=False)  # a copy on a big-endian machine only

    return ValueCoder("float32", FLOAT32, 32, 0, encode, decode, lossless=True)


def float16() -> ValueCoder:
    """Half-precision values (2x smaller; refuses values beyond float16's +-65504)."""

    def encode(values: np.ndarray, rng: np.random.Generator) -> bytes:
        if values.size and float(np.max(np.abs(values))) > 65504.0:
            raise ValueError("values beyond float16's range (+-65504); use float32 or quantize")
        return np.ascontiguousarray(values, dtype="<f2").tobytes()

    def decode(reader: Reader, count: int) -> np.ndarray:
        return reader.array("<f2", count, "float16 values").astype(np.float32)

    return ValueCoder("float16", FLOAT16, 16, 0, encode, decode, contraction=2.0**-22)


def uniform(bits: int = 8, *, stochastic: bool = True, bucket: int = 512) -> ValueCoder:
    """``bits``-bit quantisation on a uniform grid per bucket of ``bucket`` values.

    Each bucket sends its min and max as float32 (8 bytes) and one ``bits``-bit level
    per value, so the cost is ``bits + 64 / bucket`` bits per value.

    Raises:
        ValueError: ``bits`` not in (1, 2, 4, 8), or ``bucket`` < 1.
    """
    if bits not in BITS:
        raise ValueError(f"bits must be one of {', '.join(map(str, BITS))}, got {bits}")
    if stochastic is False and bits != 8:
        raise ValueError(
            f"deterministic (nearest) rounding is offered at 8 bits only, got {bits}: "
            "below 8 bits it is biased enough to stall training; use stochastic rounding"
        )
    if not isinstance(bucket, int) or bucket < 1:
        raise ValueError(f"bucket must be an integer >= 1, got {bucket!r}")
    top = (1 << bits) - 1

    def encode(values: np.ndarray, rng: np.random.Generator) -> bytes:
        v = np.ascontiguousarray(values, dtype=np.float32)
        if not np.isfinite(v).all():
            raise ValueError("cannot quantise NaN or infinite values")
        n = v.size
        width = min(bucket, max(n, 1))  # a short vector is one bucket: pad it no further
        n_buckets = -(-n // width)
        padded = np.zeros(n_buckets * width, dtype=np.float32)
        padded[:n] = v
        grid = padded.reshape(n_buckets, width)
        if n % width:  # the padding must not widen the last bucket's range
            grid[-1, n % width :] = grid[-1, 0]
        lo = grid.min(axis=1)
        hi = grid.max(axis=1)
        span = hi.astype(np.float64) - lo
        dt = _work_dtype(span, top)
        inv = np.divide(top, span, out=np.zeros_like(span), where=span > 0).astype(dt)
        scaled = (grid.astype(dt, copy=False) - lo.astype(dt)[:, None]) * inv[:, None]
        if stochastic:
            scaled += rng.random(scaled.shape, dtype=dt)
            levels = np.floor(scaled)
        else:
            levels = np.rint(scaled)
        np.clip(levels, 0, top, out=levels)
        packed = pack(levels.reshape(-1)[:n].astype(np.uint8), bits)
        return lo.astype("<f4").tobytes() + hi.astype("<f4").tobytes() + packed

    def decode(reader: Reader, count: int) -> np.ndarray:
        n_buckets = -(-count // bucket)
        lo = reader.array("<f4", n_buckets, "bucket minima")
        hi = reader.array("<f4", n_buckets, "bucket maxima")
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise CodecError("a bucket range is NaN or infinite")
        if (hi < lo).any():
            raise CodecError("a bucket's maximum is below its minimum")
        levels = unpack(reader.take(packed_size(count, bits), "quantised levels"), count, bits)
        span = hi.astype(np.float64) - lo
        dt = _work_dtype(span, top)
        step = (span / top).astype(dt)
        width = min(bucket, max(count, 1))
        grid = np.zeros(n_buckets * width, dtype=dt)
        grid[:count] = levels
        out = lo.astype(dt)[:, None] + grid.reshape(n_buckets, width) * step[:, None]
        np.minimum(out, hi[:, None], out=out)  # no float rounding past a bucket's max
        out = out.astype(np.float32, copy=False)
        return out.reshape(-1)[:count]

    # Per bucket of n values with largest magnitude M, the span is at most 2M and each
    # value's error is at most half a step (nearest) or has variance at most a quarter
    # step squared (stochastic): n * M^2 / top^2 (stochastic), a quarter of it (nearest),
    # against ||x||^2 >= M^2.
    contraction = bucket / top**2 / (1 if stochastic else 4)
    name = f"{'stochastic' if stochastic else 'nearest'}{bits}"
    tag = STOCHASTIC if stochastic else NEAREST
    return ValueCoder(name, tag, bits, bucket, encode, decode, contraction=contraction)
