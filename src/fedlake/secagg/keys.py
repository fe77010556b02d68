"""Key agreement, seed derivation and authenticated encryption of share bundles.

Each client holds two X25519 key pairs per round (Bonawitz et al., CCS 2017, Section 4):
``c`` to encrypt its share bundles to its neighbours, ``s`` to agree pairwise mask seeds.
Shared secrets go through HKDF-SHA256 (RFC 5869) with an ``info`` naming the purpose, run,
round and parties, so no two uses share a key. Bundles are sealed with ChaCha20-Poly1305
(RFC 8439) under a per-direction key, a random nonce, and associated data naming (run,
round, sender, receiver): a misrouted, replayed or tampered ciphertext fails to open.
"""

from __future__ import annotations

import os
import random as _random
import struct
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedlake.secagg.errors import InvalidCiphertext

__all__ = [
    "KEY_BYTES",
    "KeyPair",
    "Route",
    "associated_data",
    "check_public_key",
    "decrypt",
    "derive",
    "encrypt",
    "generate_keypair",
    "pairwise_seed",
    "public_key",
    "share_key",
]

KEY_BYTES = 32
NONCE_BYTES = 12
_DOMAIN = b"fedlake-secagg/1"


@dataclass(frozen=True, repr=False)
class KeyPair:
    """A raw X25519 key pair (32 bytes each); the repr hides the private key."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()[:16]}...)"


def generate_keypair(random: _random.Random | None = None) -> KeyPair:
    """A fresh X25519 key pair; ``random`` (tests only) makes it reproducible."""
    private = os.urandom(KEY_BYTES) if random is None else random.randbytes(KEY_BYTES)
    return KeyPair(private=private, public=public_key(private))


def public_key(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def check_public_key(data: bytes) -> bytes:
    """``data`` if it is a 32-byte X25519 public key, else a ValueError."""
    if not isinstance(data, bytes | bytearray) or len(data) != KEY_BYTES:
        size = len(data) if isinstance(data, bytes | bytearray) else type(data).__name__
        raise ValueError(f"expected a {KEY_BYTES}-byte X25519 public key, got {size}")
    return bytes(data)


def _info(purpose: bytes, *fields: bytes | int) -> bytes:
    """Unambiguous HKDF info / associated data: domain, purpose, then length-prefixed fields."""
    parts = [_DOMAIN, struct.pack("<I", len(purpose)), purpose]
    for field in fields:
        raw = field.to_bytes(8, "big") if isinstance(field, int) else bytes(field)
        parts += [struct.pack("<I", len(raw)), raw]
    return b"".join(parts)


def private_key(private: bytes | X25519PrivateKey) -> X25519PrivateKey:
    """The key object of a raw X25519 private key (built once per stage, not per peer)."""
    if isinstance(private, X25519PrivateKey):
        return private
    return X25519PrivateKey.from_private_bytes(private)


def derive(private: bytes | X25519PrivateKey, peer_public: bytes, *, info: bytes) -> bytes:
    """HKDF-SHA256 of the X25519 shared secret into 32 bytes bound to ``info``.

    Raises:
        ValueError: a malformed key, or a low-order peer key (all-zero shared secret).
    """
    key = private_key(private)
    shared = key.exchange(X25519PublicKey.from_public_bytes(check_public_key(peer_public)))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def pairwise_seed(
    private: bytes | X25519PrivateKey,
    peer_public: bytes,
    *,
    run_id: bytes,
    round_: int,
    pair: tuple[int, int],
) -> bytes:
    """The seed s_uv of the pairwise mask of clients ``pair`` (order-free) in one round."""
    low, high = sorted(pair)
    return derive(private, peer_public, info=_info(b"pairwise-mask", run_id, round_, low, high))


class Route(NamedTuple):
    """Where a share bundle goes: run, round, sender and receiver."""

    run_id: bytes
    round_: int
    sender: int
    receiver: int


def share_key(private: bytes | X25519PrivateKey, peer_public: bytes, route: Route) -> bytes:
    """The AEAD key of share bundles along ``route`` (one direction only)."""
    return derive(private, peer_public, info=_info(b"share-encryption", *route))


def associated_data(route: Route) -> bytes:
    """What a share bundle's ciphertext is bound to: run, round, sender and receiver."""
    return _info(b"share-bundle", *route)


def encrypt(key: bytes, plaintext: bytes, *, associated: bytes) -> bytes:
    """``nonce || ChaCha20-Poly1305(key, nonce, plaintext, associated)``, nonce random."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, ciphertext: bytes, *, associated: bytes) -> bytes:
    """Inverse of :func:`encrypt`.

    Raises:
        InvalidCiphertext: the ciphertext, key or associated data do not match.
    """
    if len(ciphertext) < NONCE_BYTES + 16:
        raise InvalidCiphertext(f"expected >= {NONCE_BYTES + 16} bytes, got {len(ciphertext)}")
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, associated)
    except InvalidTag as exc:
        raise InvalidCiphertext("authentication failed (tampered, misrouted or replayed)") from exc
