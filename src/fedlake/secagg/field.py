"""Arithmetic in GF(p) for p = 2^521 - 1, the field of the secret shares.

Why this prime: it is a Mersenne prime (a standard choice, NIST P-521's field), so every
32-byte secret (a mask seed, an X25519 private key) is *one* field element and a share is
one 66-byte number; longer secrets are cut into 65-byte chunks, one element each. Python
integers do the arithmetic exactly; the x-coordinates are small client ids, so Lagrange
coefficients are computed with exact small-integer products and one inversion each.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CHUNK_BYTES",
    "ELEMENT_BYTES",
    "PRIME",
    "from_elements",
    "lagrange_at_zero",
    "to_elements",
]

PRIME = (1 << 521) - 1
CHUNK_BYTES = 65  # 520 bits: any chunk of this many bytes is < PRIME
ELEMENT_BYTES = 66  # big-endian size of a field element


def to_elements(secret: bytes) -> tuple[int, ...]:
    """``secret`` cut into :data:`CHUNK_BYTES`-byte big-endian chunks, each a field element."""
    return tuple(
        int.from_bytes(secret[i : i + CHUNK_BYTES], "big")
        for i in range(0, len(secret), CHUNK_BYTES)
    )


def from_elements(elements: Sequence[int], length: int) -> bytes:
    """Inverse of :func:`to_elements` for a secret of ``length`` bytes.

    Raises:
        ValueError: an element too large for its chunk (the shares were inconsistent).
    """
    parts = []
    for i, element in enumerate(elements):
        size = min(CHUNK_BYTES, length - i * CHUNK_BYTES)
        if not 0 <= element < 1 << (8 * size):
            raise ValueError(
                f"reconstructed chunk {i} does not fit {size} bytes: inconsistent shares"
            )
        parts.append(element.to_bytes(size, "big"))
    return b"".join(parts)


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Coefficients c_i with f(0) = sum c_i f(x_i) for every polynomial of degree < len(xs).

    ``xs`` must be distinct and non-zero mod :data:`PRIME` (callers check).
    """
    product = 1
    for x in xs:
        product *= x
    coefficients = []
    for i, xi in enumerate(xs):
        denominator = 1
        for j, xj in enumerate(xs):
            if j != i:
                denominator *= xj - xi
        numerator = product // xi
        coefficients.append(numerator * pow(denominator % PRIME, -1, PRIME) % PRIME)
    return coefficients
