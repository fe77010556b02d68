"""Pack small unsigned integers (1, 2, 4 or 8 bits each) densely into bytes."""

from __future__ import annotations

import numpy as np

from fedlake.core.codec import CodecError

BITS = (1, 2, 4, 8)


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack(levels: np.ndarray, bits: int) -> bytes:
    """Pack uint8 ``levels`` (each < 2**bits) little-endian within each byte."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    levels = np.ascontiguousarray(levels, dtype=np.uint8)
    if bits == 8:
        return levels.tobytes()
    if bits == 1:
        return np.packbits(levels, bitorder="little").tobytes()
    per = 8 // bits
    padded = np.zeros(packed_size(levels.size, bits) * per, dtype=np.uint8)
    padded[: levels.size] = levels
    grid = padded.reshape(-1, per)
    out = np.zeros(grid.shape[0], dtype=np.uint8)
    for j in range(per):
        out |= grid[:, j] << np.uint8(bits * j)
    return out.tobytes()


def unpack(data: memoryview | bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`; rejects a wrong length or non-zero padding bits."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != packed_size(count, bits):
        raise CodecError(f"{raw.size} packed bytes for {count} values of {bits} bits")
    if bits == 8:
        return raw
    if bits == 1:
        levels = np.unpackbits(raw, bitorder="little")
    else:
        per = 8 // bits
        shifts = np.arange(per, dtype=np.uint8) * np.uint8(bits)
        levels = ((raw[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)
    if levels[count:].any():
        raise CodecError("non-zero padding bits after the last packed value")
    return levels[:count]


def pack_mask(mask: np.ndarray) -> bytes:
    """A boolean mask as a bitmap of ``ceil(d / 8)`` bytes (bit order as :func:`pack`)."""
    return pack(np.asarray(mask, dtype=np.uint8), 1)


def unpack_mask(data: memoryview | bytes, dim: int) -> np.ndarray | None:
    """The boolean mask of ``dim`` entries in a bitmap, or None when bits past ``dim`` are set.

    ``data`` must be exactly ``ceil(dim / 8)`` bytes (callers read that many).
    """
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if bits[dim:].any():
        return None
    return bits[:dim].astype(bool)
