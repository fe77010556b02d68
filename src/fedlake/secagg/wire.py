"""Canonical framing of secure-aggregation records: tag, version, then typed fields.

Integers are little-endian u32, byte strings length-prefixed, id lists and maps strictly
increasing, so each record has exactly one encoding and decoding checks every length.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from fedlake.secagg.errors import MalformedMessage

__all__ = ["Reader", "Writer"]

_VERSION = 1
_U32 = struct.Struct("<I")


class Writer:
    """Accumulates fields in the canonical layout."""

    def __init__(self, tag: int) -> None:
        self.parts = [bytes((tag, _VERSION))]

    def u32(self, value: int) -> Writer:
        """Append an unsigned 32-bit integer."""
        self.parts.append(_U32.pack(value))
        return self

    def blob(self, value: bytes) -> Writer:
        """Append a length-prefixed byte string."""
        self.parts += [_U32.pack(len(value)), bytes(value)]
        return self

    def ids(self, values: tuple[int, ...]) -> Writer:
        """Append a count and that many u32 ids (callers pass them sorted)."""
        self.u32(len(values))
        self.parts.append(struct.pack(f"<{len(values)}I", *values))
        return self

    def blobs(self, values: Mapping[int, bytes]) -> Writer:
        """Append a map of u32 keys to byte strings, sorted by key."""
        self.u32(len(values))
        for key in sorted(values):
            self.u32(key).blob(values[key])
        return self

    def done(self) -> bytes:
        """The record's bytes."""
        return b"".join(self.parts)


class Reader:
    """Reads fields back, raising MalformedMessage on anything out of place."""

    def __init__(self, data: bytes | bytearray | memoryview, tag: int, name: str) -> None:
        self.data, self.at, self.name = bytes(data), 2, name
        if len(self.data) < 2 or self.data[0] != tag:
            raise MalformedMessage(f"expected a {name} message (tag {tag}), got other bytes")
        if self.data[1] != _VERSION:
            raise MalformedMessage(f"expected {name} version {_VERSION}, got {self.data[1]}")

    def _take(self, size: int) -> bytes:
        """The next ``size`` bytes, or MalformedMessage when fewer remain."""
        if size > len(self.data) - self.at:
            raise MalformedMessage(f"truncated {self.name} message")
        out = self.data[self.at : self.at + size]
        self.at += size
        return out

    def u32(self) -> int:
        """Read an unsigned 32-bit integer."""
        return int(_U32.unpack(self._take(4))[0])

    def blob(self) -> bytes:
        """Read a length-prefixed byte string."""
        return self._take(self.u32())

    def ids(self) -> tuple[int, ...]:
        """Read a strictly increasing list of u32 ids."""
        count = self.u32()
        values = struct.unpack(f"<{count}I", self._take(4 * count))
        if list(values) != sorted(set(values)):
            raise MalformedMessage(f"{self.name}: ids must be strictly increasing")
        return tuple(values)

    def blobs(self) -> dict[int, bytes]:
        """Read a map of u32 keys (strictly increasing) to byte strings."""
        out: dict[int, bytes] = {}
        last = -1
        for _ in range(self.u32()):
            key = self.u32()
            if key <= last:
                raise MalformedMessage(f"{self.name}: map keys must be strictly increasing")
            out[key], last = self.blob(), key
        return out

    def done(self) -> None:
        """Raise MalformedMessage if bytes remain after the last field."""
        if self.at != len(self.data):
            raise MalformedMessage(f"{len(self.data) - self.at} trailing bytes after {self.name}")
