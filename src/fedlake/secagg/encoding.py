"""Fixed-point encoding of weighted float vectors into Z_R, and the sum back to floats.

A client clips each coordinate to [-C, C], multiplies by its weight w and the scale s, and
rounds stochastically (unbiased: E[q] = w s x) to an integer q with |q| <= ceil(W C s),
W the largest weight. The sum of n such integers lies in [-n ceil(W C s), n ceil(W C s)],
so when 2 n ceil(W C s) < R = 2^bits the sum mod R decodes exactly by reading the upper
half of Z_R as negative (two's complement). That inequality is checked when the encoding
is built, never assumed. Each client's rounding error is below one unit, so the decoded
weighted mean is within n / (s * total weight) of the mean of the clipped inputs.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fedlake.core.checks import check_int, check_positive
from fedlake.secagg.ring import BITS, check_bits, dtype_for, reduce

__all__ = ["Encoded", "FixedPoint", "fixed_point", "required_bits"]

_EXACT = 2**52  # largest |w C s| whose float64 products keep integer precision
_SCRATCH = threading.local()  # encode()'s reused float64 work buffer, per thread


def _scratch(size: int) -> np.ndarray:
    """A float64 work buffer of ``size`` values, reused by this thread's next call."""
    buf: np.ndarray | None = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < size:
        _SCRATCH.buf = buf = np.empty(size, dtype=np.float64)
    return buf[:size]


class Encoded(NamedTuple):
    """One client's encoded input: ``values`` in Z_R and how many coordinates were clipped."""

    values: np.ndarray
    clipped: int


def _magnitude(clip: float, scale: float, max_weight: float) -> int:
    """The largest |q| one client can contribute to a coordinate."""
    return math.ceil(max_weight * clip * scale)


def required_bits(*, clip: float, scale: float, clients: int, max_weight: float = 1.0) -> int:
    """The fewest bits b with 2 * clients * ceil(max_weight * clip * scale) < 2^b.

    Ring widths come in whole bytes (:data:`fedlake.secagg.ring.BITS`): round up to one.
    """
    clip, scale = check_positive("clip", clip), check_positive("scale", scale)
    max_weight = check_positive("max_weight", max_weight)
    clients = check_int("clients", clients, low=1)
    return (2 * clients * _magnitude(clip, scale, max_weight)).bit_length()


@dataclass(frozen=True)
class FixedPoint:
    """A checked fixed-point encoding; build it with :func:`fixed_point`.

    Attributes:
        clip: per-coordinate clipping bound C.
        scale: quantisation levels per unit (a value v becomes about v * scale).
        bits: the ring's width, R = 2^bits.
        clients: the most clients whose inputs are ever summed.
        max_weight: the largest client weight W.
    """

    clip: float
    scale: float
    bits: int
    clients: int
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        check_bits(self.bits)
        needed = required_bits(
            clip=self.clip, scale=self.scale, clients=self.clients, max_weight=self.max_weight
        )
        magnitude = _magnitude(self.clip, self.scale, self.max_weight)
        if magnitude > _EXACT:
            raise ValueError(
                f"max_weight * clip * scale must be <= 2^52 for exact float64 rounding, got "
                f"{self.max_weight:g} * {self.clip:g} * {self.scale:g} = {magnitude:.3g}"
            )
        if needed > self.bits:
            smallest = next((b for b in BITS if b >= needed), None)
            advice = f"use bits={smallest}" if smallest else "lower the scale"
            raise ValueError(
                f"R = 2^{self.bits} is too small: {self.clients} clients x up to "
                f"{magnitude} per coordinate (max_weight {self.max_weight:g} x clip "
                f"{self.clip:g} x scale {self.scale:g}) need 2 x {self.clients} x "
                f"{magnitude} < R, i.e. >= {needed} bits; {advice}"
            )

    @property
    def magnitude(self) -> int:
        """The largest |q| one client contributes to a coordinate: ceil(W C s)."""
        return _magnitude(self.clip, self.scale, self.max_weight)

    def encode(self, vector: np.ndarray, *, weight: float, rng: np.random.Generator) -> Encoded:
        """Clip, weight, scale and stochastically round ``vector`` into Z_R.

        Raises:
            ValueError: a non-finite coordinate, or a weight outside (0, max_weight].
        """
        fresh = np.asarray(vector).dtype != np.float64  # converted: ours to overwrite
        x = np.asarray(vector, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D vector, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"expected finite values, got {int((~np.isfinite(x)).sum())} not")
        weight = check_positive("weight", weight)
        if weight > self.max_weight:
            raise ValueError(f"weight must be <= max_weight {self.max_weight:g}, got {weight:g}")
        # in place and in a reused buffer where it can be: at 10^6 values a fresh array's
        # page faults cost more than the maths (encode: ~15 -> ~6 ms measured)
        work = _scratch(x.size)
        clipped = int(np.count_nonzero(np.greater(np.abs(x, out=work), self.clip)))
        scaled = np.clip(x, -self.clip, self.clip, out=x if fresh else None)
        scaled *= weight * self.scale
        scaled += rng.random(out=work)  # floor(v + u), u ~ U[0, 1): up w.p. frac(v)
        np.floor(scaled, out=scaled)
        dtype = dtype_for(self.bits)  # |q| < 2^(bits - 1): the signed type of its width holds it
        words = scaled.astype(np.dtype(f"int{8 * dtype.itemsize}")).view(dtype)
        return Encoded(values=reduce(words, self.bits), clipped=clipped)

    def to_ring(self, q: np.ndarray) -> np.ndarray:
        """Signed integers as their residues mod 2^bits (two's complement)."""
        dtype = dtype_for(self.bits)
        # integer casts to an unsigned type wrap modulo its width (C semantics)
        words = np.asarray(q, dtype=np.int64).astype(dtype)
        if self.bits < 8 * dtype.itemsize:
            words &= dtype.type((1 << self.bits) - 1)
        return words

    def centred(self, total: np.ndarray) -> np.ndarray:
        """Residues mod 2^bits as int64 in [-R/2, R/2) (the sum's exact signed value)."""
        values = np.asarray(total, dtype=dtype_for(self.bits))
        if self.bits == 64:
            return values.view(np.int64).copy()
        signed = values.astype(np.int64)
        signed[signed >= 1 << (self.bits - 1)] -= 1 << self.bits
        return signed

    def decode(self, total: np.ndarray, *, total_weight: float) -> np.ndarray:
        """The weighted mean from the sum mod R of encoded inputs (float64)."""
        total_weight = check_positive("total_weight", total_weight)
        return self.centred(total).astype(np.float64) / (self.scale * total_weight)

    def error_bound(self, *, clients: int, total_weight: float) -> float:
        """Largest |decoded - weighted mean of the clipped inputs| per coordinate."""
        clients = check_int("clients", clients, low=1)
        return clients / (self.scale * check_positive("total_weight", total_weight))


def fixed_point(
    *,
    clip: float,
    bits: int,
    clients: int,
    max_weight: float = 1.0,
    scale: float | None = None,
) -> FixedPoint:
    """A fixed-point encoding that cannot wrap for ``clients`` inputs of weight <= max_weight.

    Args:
        clip: per-coordinate bound C; larger coordinates are clipped (and counted).
        bits: the ring's width (:data:`fedlake.secagg.ring.BITS`).
        clients: the most clients ever summed (the round's cohort size).
        max_weight: the largest weight a client may use (e.g. its example count).
        scale: quantisation levels per unit; None picks the largest power of two that fits.

    Raises:
        ValueError: the ring is too small for these numbers (the message says how many
            bits would do).
    """
    if scale is None:
        clip_ = check_positive("clip", clip)
        weight_ = check_positive("max_weight", max_weight)
        n = check_int("clients", clients, low=1)
        room = min((2 ** (check_bits(bits) - 1) - 1) // n, _EXACT)  # per client, per value
        if room < 1:
            raise ValueError(f"R = 2^{bits} cannot hold the sum of {n} clients at any scale")
        scale = 2.0 ** math.floor(math.log2(room / (weight_ * clip_)))
        while _magnitude(clip_, scale, weight_) > room:  # ceil() and float rounding
            scale /= 2
    return FixedPoint(clip=clip, scale=scale, bits=bits, clients=clients, max_weight=max_weight)
