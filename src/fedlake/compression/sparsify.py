"""Sparsifiers: which positions of a vector are sent, and how the positions travel.

- :func:`dense`: every position; nothing to send for positions.
- :func:`top_k`: the ``k`` largest magnitudes (Stich et al., "Sparsified SGD with
  Memory", NeurIPS 2018 - pair it with error feedback). Positions travel as 16- or
  32-bit indices or as a bitmap, whichever is smaller.
- :func:`random_mask`: a random subset drawn from a seed, so only the 8-byte seed
  travels (Konecny et al., "Federated Learning: Strategies for Improving Communication
  Efficiency", 2016, sketched updates by random subsampling). ``unbiased=True``
  scales the kept values by ``1 / ratio`` so the decoded vector is unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fedlake.compression.wire import Reader
from fedlake.core.codec import CodecError

DENSE, TOP_K, RANDOM_MASK = 0, 1, 2  # sparsifier tags in the header
ALL, U16, U32, BITMAP, SEED = 0, 1, 2, 3, 4  # index modes in the header


class Selection(NamedTuple):
    """Chosen positions (None: all), how they are written, and a scale for the values."""

    positions: np.ndarray | None
    index_mode: int
    index_bytes: bytes
    scale: float = 1.0


class Sparsifier(NamedTuple):
    """Picks positions at encode time and reads them back at decode time."""

    name: str
    tag: int
    select: Callable[[np.ndarray, np.random.Generator], Selection]
    positions: Callable[[Reader, int, int, int], np.ndarray | None]
    lossless: bool = False


def _check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, int | float) and 0 < ratio <= 1):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def dense() -> Sparsifier:
    """Every position (no sparsification)."""

    def select(vec: np.ndarray, rng: np.random.Generator) -> Selection:
        return Selection(None, ALL, b"")

    def positions(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray | None:
        if mode != ALL or count != dim:
            raise CodecError(f"dense payload with index mode {mode} and {count} of {dim} values")
        return None

    return Sparsifier("dense", DENSE, select, positions, lossless=True)


def encode_indices(idx: np.ndarray, dim: int) -> tuple[int, bytes]:
    """The smallest of u16 indices, u32 indices and a bitmap for sorted ``idx``."""
    width = 2 if dim <= 1 << 16 else 4
    if len(idx) * width * 8 >= dim:
        bitmap = np.zeros(dim, dtype=np.uint8)
        bitmap[idx] = 1
        return BITMAP, np.packbits(bitmap, bitorder="little").tobytes()
    dtype = "<u2" if width == 2 else "<u4"
    return (U16 if width == 2 else U32), idx.astype(dtype).tobytes()


def decode_indices(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray:
    """Read sorted, distinct, in-range indices written by :func:`encode_indices`."""
    if mode == BITMAP:
        raw = np.frombuffer(reader.take((dim + 7) // 8, "position bitmap"), dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder="little")
        if bits[dim:].any():
            raise CodecError("position bitmap has bits set past the vector's end")
        idx = np.flatnonzero(bits[:dim])
        if idx.size != count:
            raise CodecError(f"position bitmap marks {idx.size} positions, header says {count}")
        return idx
    if mode not in (U16, U32):
        raise CodecError(f"unknown index mode {mode} for a top-k payload")
    idx = reader.array("<u2" if mode == U16 else "<u4", count, "indices").astype(np.int64)
    if idx.size and (idx[-1] >= dim or idx[0] < 0):
        raise CodecError(f"an index is out of range for a vector of {dim} values")
    if idx.size > 1 and not (np.diff(idx) > 0).all():
        raise CodecError("indices are not strictly increasing (repeated or unsorted)")
    return idx


def top_k(ratio: float) -> Sparsifier:
    """Keep the ``ceil(ratio * d)`` largest-magnitude entries (at least one)."""
    ratio = _check_ratio(ratio)

    def select(vec: np.ndarray, rng: np.random.Generator) -> Selection:
        d = vec.size
        k = min(d, max(1, math.ceil(ratio * d)))
        idx = np.arange(d) if k == d else np.sort(np.argpartition(np.abs(vec), d - k)[d - k :])
        mode, data = encode_indices(idx, d)
        return Selection(idx, mode, data)

    def positions(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray:
        return decode_indices(reader, mode, dim, count)

    return Sparsifier(f"top{ratio:g}", TOP_K, select, positions)


def _mask_from_seed(seed: int, dim: int, ratio: float) -> np.ndarray:
    """Positions kept by a Bernoulli(``ratio``) mask drawn from ``seed``.

    Uses the PCG64 raw stream, which numpy guarantees stable across versions, so a
    receiver with another numpy rebuilds the same mask.
    """
    raw = np.random.PCG64(seed).random_raw(dim)
    threshold = np.uint64(min(int(ratio * 2.0**64), 2**64 - 1))
    return np.flatnonzero(raw < threshold)


def random_mask(ratio: float, *, unbiased: bool = True) -> Sparsifier:
    """Keep a random ``ratio`` of the positions; only the seed of the mask is sent."""
    ratio = _check_ratio(ratio)
    scale = 1.0 / ratio if unbiased else 1.0

    def select(vec: np.ndarray, rng: np.random.Generator) -> Selection:
        seed = int(rng.integers(0, 2**63))
        idx = _mask_from_seed(seed, vec.size, ratio)
        return Selection(idx, SEED, np.uint64(seed).astype("<u8").tobytes(), scale)

    def positions(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray:
        if mode != SEED:
            raise CodecError(f"random-mask payload with index mode {mode}, expected a seed")
        seed = int(reader.array("<u8", 1, "mask seed")[0])
        idx = _mask_from_seed(seed, dim, ratio)
        if idx.size != count:
            raise CodecError(f"the mask seed selects {idx.size} positions, header says {count}")
        return idx

    name = f"random{ratio:g}" + ("" if unbiased else "-biased")
    return Sparsifier(name, RANDOM_MASK, select, positions)
