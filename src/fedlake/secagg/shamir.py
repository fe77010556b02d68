"""Shamir t-of-n secret sharing of byte strings over GF(2^521 - 1).

Any ``threshold`` shares give the secret back; fewer reveal nothing about it (every secret
is equally consistent with them). Reference: A. Shamir, "How to share a secret",
Communications of the ACM, 1979.
"""

from __future__ import annotations

import random as _random
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fedlake.secagg.errors import MalformedMessage
from fedlake.secagg.field import (
    CHUNK_BYTES,
    ELEMENT_BYTES,
    PRIME,
    from_elements,
    lagrange_at_zero,
    to_elements,
)

__all__ = ["Share", "combine", "split"]

_HEADER = struct.Struct("<IIII")  # x, threshold, secret length, element count
_MAX_X = 2**32 - 1


@dataclass(frozen=True)
class Share:
    """One holder's share: the points (x, f_j(x)) of one polynomial per secret chunk.

    Attributes:
        x: the holder's x-coordinate (its client id), 1 <= x < 2^32.
        threshold: how many shares reconstruct the secret.
        length: the secret's length in bytes.
        values: f_j(x) for each 65-byte chunk j of the secret.
    """

    x: int
    threshold: int
    length: int
    values: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """Fixed-layout bytes: a 16-byte header, then 66 bytes per value."""
        head = _HEADER.pack(self.x, self.threshold, self.length, len(self.values))
        return head + b"".join(v.to_bytes(ELEMENT_BYTES, "big") for v in self.values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Inverse of :meth:`to_bytes`; rejects wrong lengths and out-of-field values."""
        if len(data) < _HEADER.size:
            raise MalformedMessage(f"expected a share of >= {_HEADER.size} bytes, got {len(data)}")
        x, threshold, length, count = _HEADER.unpack_from(data)
        if len(data) != _HEADER.size + count * ELEMENT_BYTES:
            raise MalformedMessage(
                f"expected {_HEADER.size + count * ELEMENT_BYTES} bytes for a share of "
                f"{count} values, got {len(data)}"
            )
        values = tuple(
            int.from_bytes(data[i : i + ELEMENT_BYTES], "big")
            for i in range(_HEADER.size, len(data), ELEMENT_BYTES)
        )
        share = cls(x=x, threshold=threshold, length=length, values=values)
        try:
            _check_share(share)
        except ValueError as exc:
            raise MalformedMessage(str(exc)) from exc
        return share


def _check_share(share: Share) -> None:
    """Raise ValueError when a share's fields are out of range or mutually inconsistent."""
    if not 1 <= share.x <= _MAX_X:
        raise ValueError(f"share x must be in [1, 2^32), got {share.x}")
    if share.threshold < 1:
        raise ValueError(f"share threshold must be >= 1, got {share.threshold}")
    expected = -(-share.length // CHUNK_BYTES)
    if len(share.values) != expected:
        raise ValueError(
            f"expected {expected} values for a {share.length}-byte secret, got {len(share.values)}"
        )
    if any(not 0 <= v < PRIME for v in share.values):
        raise ValueError("share values must lie in [0, 2^521 - 1)")


def split(
    secret: bytes,
    *,
    threshold: int,
    holders: Sequence[int],
    rng: _random.Random | None = None,
) -> dict[int, Share]:
    """Share ``secret`` among ``holders`` (their x-coordinates) so any ``threshold`` recover it.

    Args:
        secret: the bytes to share (any length).
        threshold: shares needed to reconstruct, 1 <= threshold <= len(holders).
        holders: distinct x-coordinates in [1, 2^32), typically client ids.
        rng: source of the polynomial coefficients; None (the default, and the only safe
            choice outside tests) draws them from the operating system (``secrets``).

    Returns:
        The share of each holder, keyed by its x.
    """
    xs = list(holders)
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise ValueError(f"threshold must be an integer, got {threshold!r}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}] (the holders), got {threshold}")
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= _MAX_X:
            raise ValueError(f"holders must be integers in [1, 2^32), got {x!r}")
    if len(set(xs)) != len(xs):
        raise ValueError(f"holders must be distinct, got {sorted(xs)}")
    source = rng if rng is not None else secrets.SystemRandom()
    chunks = to_elements(bytes(secret))
    # One polynomial per chunk: f(0) = chunk, threshold - 1 uniform coefficients.
    polynomials = [
        [chunk, *(source.randrange(PRIME) for _ in range(threshold - 1))] for chunk in chunks
    ]
    shares = {}
    for x in xs:
        values = []
        for coefficients in polynomials:
            acc = 0
            for c in reversed(coefficients):  # Horner: x is small, each step is cheap
                acc = (acc * x + c) % PRIME
            values.append(acc)
        shares[x] = Share(x=x, threshold=threshold, length=len(secret), values=tuple(values))
    return shares


def combine(shares: Iterable[Share] | Mapping[int, Share]) -> bytes:
    """The secret from ``threshold`` or more shares (the ``threshold`` lowest x are used).

    Raises:
        ValueError: fewer shares than their threshold, duplicate x, x = 0, or shares that
            disagree on the threshold, the secret's length or the number of values.
    """
    items = list(shares.values()) if isinstance(shares, Mapping) else list(shares)
    if not items:
        raise ValueError("expected at least one share, got none")
    first = items[0]
    for share in items:
        _check_share(share)
        if (share.threshold, share.length) != (first.threshold, first.length):
            raise ValueError(
                f"inconsistent shares: expected threshold {first.threshold} and length "
                f"{first.length}, got threshold {share.threshold} and length {share.length}"
            )
    xs = [share.x for share in items]
    if len(set(xs)) != len(xs):
        raise ValueError(f"expected distinct share x-coordinates, got {sorted(xs)}")
    if len(items) < first.threshold:
        raise ValueError(f"expected >= {first.threshold} shares (the threshold), got {len(items)}")
    used = sorted(items, key=lambda share: share.x)[: first.threshold]
    coefficients = lagrange_at_zero([share.x for share in used])
    elements = [
        sum(c * share.values[j] for c, share in zip(coefficients, used, strict=True)) % PRIME
        for j in range(len(first.values))
    ]
    return from_elements(elements, first.length)
