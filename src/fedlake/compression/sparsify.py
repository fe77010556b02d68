"""Sparsifiers: which positions of a vector are sent, and how the positions travel.

- :func:`dense`: every position; nothing to send for positions.
- :func:`top_k`: the ``k`` largest magnitudes (Stich et al., "Sparsified SGD with
  Memory", NeurIPS 2018 - pair it with error feedback). Positions travel as 16- or
  32-bit indices or as a bitmap, whichever is smaller.
- :func:`random_mask`: random-k, a random subset of ``k`` positions drawn from a
  seed, so only the 8-byte seed travels (Konecny et al., "Federated Learning:
  Strategies for Improving Communication Efficiency", 2016: sketched updates by
  random subsampling, ``unbiased=True`` scales the kept values by ``d / k``; and
  structured updates, ``structured=True``, where clients train only the masked weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from fedlake.compression.bitpack import pack_mask, unpack_mask
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
    contractive: bool = True  # ||kept - x|| <= ||x||: false when kept values are rescaled
    # structured updates: the positions a client trains, drawn as ``select`` will draw them
    train_positions: Callable[[int, np.random.Generator], np.ndarray] | None = None


def count_of(ratio: float, dim: int) -> int:
    """``ceil(ratio * dim)``, at least 1, with float noise removed (0.07 * 100 is 7, not 8)."""
    return min(dim, max(1, math.ceil(round(ratio * dim, 6))))


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
        bitmap = np.zeros(dim, dtype=bool)
        bitmap[idx] = True
        return BITMAP, pack_mask(bitmap)
    dtype = "<u2" if width == 2 else "<u4"
    return (U16 if width == 2 else U32), idx.astype(dtype).tobytes()


def decode_indices(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray:
    """Read sorted, distinct, in-range indices written by :func:`encode_indices`."""
    if mode == BITMAP:
        bits = unpack_mask(reader.take((dim + 7) // 8, "position bitmap"), dim)
        if bits is None:
            raise CodecError("position bitmap has bits set past the vector's end")
        idx = np.flatnonzero(bits)
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
        k = count_of(ratio, d)
        idx = np.arange(d) if k == d else np.sort(np.argpartition(np.abs(vec), d - k)[d - k :])
        mode, data = encode_indices(idx, d)
        return Selection(idx, mode, data)

    def positions(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray:
        if count != count_of(ratio, dim):  # more values than the budget is not top-k
            raise CodecError(
                f"top-k payload carries {count} values, expected {count_of(ratio, dim)}"
            )
        return decode_indices(reader, mode, dim, count)

    return Sparsifier(f"top{ratio:g}", TOP_K, select, positions)


def _mask_from_seed(seed: int, dim: int, ratio: float) -> np.ndarray:
    """The ``count_of(ratio, dim)`` positions chosen uniformly at random by ``seed``.

    The positions of the smallest draws of the PCG64 raw stream (which numpy keeps
    stable across versions), so a receiver with another numpy rebuilds the same set.
    """
    k = count_of(ratio, dim)
    raw = np.random.PCG64(seed).random_raw(dim)
    if k == dim:
        return np.arange(dim)
    return np.sort(np.argpartition(raw, k - 1)[:k])


def _draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63))


def random_mask(ratio: float, *, unbiased: bool = True, structured: bool = False) -> Sparsifier:
    """Keep ``k = ceil(ratio * d)`` random positions; only the mask's seed is sent.

    ``unbiased`` scales the kept values by ``d / k`` so the decoded vector is an
    unbiased estimate (a sketched update). ``structured=True`` is Konecny et al.'s
    structured update: the client draws the mask *before* training and trains only
    those weights, so the sparse update loses nothing to sparsification (no scaling).
    """
    ratio = _check_ratio(ratio)
    if structured and unbiased:
        raise ValueError("a structured random mask sends its values unscaled: pass unbiased=False")

    def select(vec: np.ndarray, rng: np.random.Generator) -> Selection:
        seed = _draw_seed(rng)
        idx = _mask_from_seed(seed, vec.size, ratio)
        scale = vec.size / idx.size if unbiased and idx.size else 1.0
        return Selection(idx, SEED, np.uint64(seed).astype("<u8").tobytes(), scale)

    def positions(reader: Reader, mode: int, dim: int, count: int) -> np.ndarray:
        if mode != SEED:
            raise CodecError(f"random-mask payload with index mode {mode}, expected a seed")
        seed = int(reader.array("<u8", 1, "mask seed")[0])
        if count != count_of(ratio, dim):
            raise CodecError(
                f"random-mask payload carries {count} values, expected {count_of(ratio, dim)}"
            )
        return _mask_from_seed(seed, dim, ratio)

    def train_positions(dim: int, rng: np.random.Generator) -> np.ndarray:
        return _mask_from_seed(_draw_seed(rng), dim, ratio)

    kind = "structured" if structured else "random"
    name = f"{kind}{ratio:g}" + ("" if unbiased or structured else "-biased")
    return Sparsifier(
        name,
        RANDOM_MASK,
        select,
        positions,
        contractive=not unbiased,
        train_positions=train_positions if structured else None,
    )
