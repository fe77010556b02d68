"""Vectors in Z_R with R = 2^bits: machine dtypes, wrap-around sums and exact-width packing.

Arithmetic modulo a power of two is what unsigned machine integers do natively, so sums of
masked vectors cost one numpy add each. Widths are whole bytes (16 to 64 bits) so packing
is a byte slice: a masked vector travels at exactly ``bits / 8`` bytes per value.
"""

from __future__ import annotations

import numpy as np

from fedlake.secagg.errors import MalformedMessage

__all__ = ["BITS", "check_bits", "dtype_for", "pack", "packed_size", "reduce", "unpack"]

BITS = (16, 24, 32, 40, 48, 56, 64)


def check_bits(bits: object) -> int:
    """``bits`` as an int in :data:`BITS`, else a ValueError saying what was expected."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    return bits


def dtype_for(bits: int) -> np.dtype[np.unsignedinteger]:
    """The smallest unsigned machine dtype that holds values of ``bits`` bits."""
    check_bits(bits)
    if bits <= 16:
        return np.dtype(np.uint16)
    if bits <= 32:
        return np.dtype(np.uint32)
    return np.dtype(np.uint64)


def reduce(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (of :func:`dtype_for` ``bits``) reduced mod 2^bits in place; returned."""
    if bits < 8 * values.dtype.itemsize:
        values &= values.dtype.type((1 << bits) - 1)
    return values


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` packed values of ``bits`` bits."""
    return count * (check_bits(bits) // 8)


def pack(values: np.ndarray, bits: int) -> bytes:
    """Values in [0, 2^bits) as little-endian ``bits / 8``-byte words.

    Raises:
        ValueError: a value outside [0, 2^bits), or an array that is not 1-D integers.
    """
    dtype = dtype_for(bits)
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "ui":
        raise ValueError(f"expected a 1-D integer array, got {array.dtype} of shape {array.shape}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= 1 << bits):
        raise ValueError(
            f"values must lie in [0, 2^{bits}), got range [{int(array.min())}, {int(array.max())}]"
        )
    words = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    width = bits // 8
    if width == dtype.itemsize:
        return words.tobytes()
    return words.view(np.uint8).reshape(-1, dtype.itemsize)[:, :width].tobytes()


def unpack(data: bytes | bytearray | memoryview, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: exactly ``count`` values of ``bits`` bits, else an error.

    Raises:
        MalformedMessage: ``data`` is not exactly ``count * bits / 8`` bytes.
    """
    dtype = dtype_for(bits)
    raw = np.frombuffer(data, dtype=np.uint8)
    expected = packed_size(count, bits)
    if raw.size != expected:
        raise MalformedMessage(
            f"expected {expected} bytes for {count} values of {bits} bits, got {raw.size}"
        )
    width = bits // 8
    if width == dtype.itemsize:
        return raw.view(dtype.newbyteorder("<")).astype(dtype)
    padded = np.zeros((count, dtype.itemsize), dtype=np.uint8)
    padded[:, :width] = raw.reshape(count, width)
    return padded.reshape(-1).view(dtype.newbyteorder("<")).astype(dtype)
