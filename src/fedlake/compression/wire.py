"""The compact wire format: a fixed header, then sections read with bounds checks.

Every payload starts with a 36-byte little-endian header::

    magic "FLC" | version u8 | sparsifier u8 | value coder u8 | bits u8 | index mode u8
    | bucket u32 | dim u64 | count u64 | body length u64

``dim`` is the length of the decoded vector, ``count`` how many values the body
carries, and the body length must match exactly. A decoder is configured with the
codec it expects and refuses payloads written by another (tags, bits, bucket, dim).

Written here, not with a serialisation library: the format is a few fixed fields and
raw numpy buffers, and ``struct`` + ``np.frombuffer`` read it with no copy and no
dependency on a schema compiler on small devices.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from fedlake.core.codec import CodecError

MAGIC = b"FLC"
VERSION = 1
HEADER = struct.Struct("<3sBBBBBIQQQ")
HEADER_BYTES = HEADER.size


@dataclass(frozen=True)
class Header:
    """The fixed fields at the start of every payload."""

    sparsifier: int
    coder: int
    bits: int
    index_mode: int
    bucket: int
    dim: int
    count: int
    body_length: int

    def pack(self) -> bytes:
        """The 36 header bytes."""
        return HEADER.pack(
            MAGIC,
            VERSION,
            self.sparsifier,
            self.coder,
            self.bits,
            self.index_mode,
            self.bucket,
            self.dim,
            self.count,
            self.body_length,
        )


def read_header(data: bytes | bytearray | memoryview) -> tuple[Header, Reader]:
    """Parse and check the header; return it with a reader over exactly the body."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, got {type(data).__name__}")
    if len(data) < HEADER_BYTES:
        raise CodecError(
            f"payload of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, sparsifier, coder, bits, index_mode, bucket, dim, count, body = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise CodecError(f"not a fedlake payload (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CodecError(f"payload format version {version} is not supported (expected {VERSION})")
    if count > dim:
        raise CodecError(f"payload claims {count} values for a vector of {dim}")
    if body != len(data) - HEADER_BYTES:
        raise CodecError(
            f"payload body is {len(data) - HEADER_BYTES} bytes but its header says {body}"
        )
    header = Header(sparsifier, coder, bits, index_mode, bucket, dim, count, body)
    return header, Reader(memoryview(data)[HEADER_BYTES:])


class Reader:
    """Sequential reads from a payload body; every read is bounds-checked."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def take(self, n: int, what: str) -> memoryview:
        """The next ``n`` bytes, or a CodecError naming ``what`` was cut short."""
        left = len(self._view) - self._pos
        if n < 0 or n > left:
            raise CodecError(f"truncated payload: {what} needs {n} bytes, {left} left")
        out = self._view[self._pos : self._pos + n]
        self._pos += n
        return out

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """The next ``count`` items of little-endian ``dtype`` as a read-only array."""
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(count * dt.itemsize, what), dtype=dt)

    def finish(self) -> None:
        """Refuse trailing bytes: a well-formed payload is read exactly to its end."""
        left = len(self._view) - self._pos
        if left:
            raise CodecError(f"{left} unexpected bytes after the payload's last section")


def expect(
    header: Header, *, sparsifier: int, coder: int, bits: int, bucket: int, dim: int
) -> None:
    """Check that a payload was written by the codec this side is configured with."""
    got = (header.sparsifier, header.coder, header.bits, header.bucket)
    want = (sparsifier, coder, bits, bucket)
    if got != want:
        raise CodecError(
            "payload written by another codec (sparsifier, coder, bits, bucket) = "
            f"{got}, expected {want}"
        )
    if header.dim != dim:
        raise CodecError(f"payload is for a vector of {header.dim} values, expected {dim}")
