"""The messages of a SecAgg+ round: small frozen records with a canonical byte encoding.

Every message starts with a tag byte and a version byte; integers are little-endian,
byte strings are length-prefixed, maps are sorted by key (strictly increasing, so the
encoding is canonical). Decoding checks every length and never evaluates anything: no
pickle. Stage by stage, client to server (C->S) and server to client (S->C):

0. AdvertiseKeys (C->S), KeyDirectory (S->C): the neighbours' public keys.
1. ShareKeys (C->S), ShareDelivery (S->C): encrypted share bundles, routed.
2. MaskedInput (C->S): the masked vector.
3. UnmaskRequest (S->C), UnmaskResponse (C->S): the survivors, and shares to unmask them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fedlake.secagg.errors import MalformedMessage
from fedlake.secagg.wire import Reader as _Reader
from fedlake.secagg.wire import Writer as _Writer

__all__ = [
    "AdvertiseKeys",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "ShareBundle",
    "ShareDelivery",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode",
]


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, C->S: a client's two public keys (c: encryption, s: masking)."""

    TAG: ClassVar[int] = 1
    sender: int
    encryption_key: bytes
    masking_key: bytes

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        w = _Writer(self.TAG).u32(self.sender)
        return w.blob(self.encryption_key).blob(self.masking_key).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> AdvertiseKeys:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(sender=r.u32(), encryption_key=r.blob(), masking_key=r.blob())
        r.done()
        return out


@dataclass(frozen=True)
class KeyDirectory:
    """Stage 0, S->C: the advertised keys of the receiver's neighbours that advertised."""

    TAG: ClassVar[int] = 2
    receiver: int
    peers: tuple[AdvertiseKeys, ...]

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        keys = {p.sender: p.encryption_key + p.masking_key for p in self.peers}
        if len(keys) != len(self.peers):
            raise ValueError("KeyDirectory: duplicate peer ids")
        return _Writer(self.TAG).u32(self.receiver).blobs(keys).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> KeyDirectory:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        receiver, keys = r.u32(), r.blobs()
        r.done()
        peers = []
        for sender, both in keys.items():
            if len(both) % 2:
                raise MalformedMessage("KeyDirectory: keys of unequal lengths")
            half = len(both) // 2
            peers.append(AdvertiseKeys(sender, both[:half], both[half:]))
        return cls(receiver=receiver, peers=tuple(peers))


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, C->S: one encrypted share bundle per neighbour (receiver -> ciphertext)."""

    TAG: ClassVar[int] = 3
    sender: int
    ciphertexts: Mapping[int, bytes]

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        return _Writer(self.TAG).u32(self.sender).blobs(self.ciphertexts).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ShareKeys:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(sender=r.u32(), ciphertexts=r.blobs())
        r.done()
        return out


@dataclass(frozen=True)
class ShareDelivery:
    """Stage 1, S->C: the bundles addressed to the receiver (sender -> ciphertext)."""

    TAG: ClassVar[int] = 4
    receiver: int
    ciphertexts: Mapping[int, bytes]

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        return _Writer(self.TAG).u32(self.receiver).blobs(self.ciphertexts).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ShareDelivery:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(receiver=r.u32(), ciphertexts=r.blobs())
        r.done()
        return out


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, C->S: y_u packed at bits/8 bytes a value, and peers whose bundles failed."""

    TAG: ClassVar[int] = 5
    sender: int
    vector: bytes
    undecryptable: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        w = _Writer(self.TAG).u32(self.sender).blob(self.vector)
        return w.ids(tuple(sorted(self.undecryptable))).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> MaskedInput:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(sender=r.u32(), vector=r.blob(), undecryptable=r.ids())
        r.done()
        return out


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, S->C: the clients whose masked inputs the server holds (U3)."""

    TAG: ClassVar[int] = 6
    receiver: int
    survivors: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        return _Writer(self.TAG).u32(self.receiver).ids(tuple(sorted(self.survivors))).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> UnmaskRequest:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(receiver=r.u32(), survivors=r.ids())
        r.done()
        return out


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, C->S: shares of b_v for surviving v, of s_v's private key for dropped v."""

    TAG: ClassVar[int] = 7
    sender: int
    seed_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        w = _Writer(self.TAG).u32(self.sender)
        return w.blobs(self.seed_shares).blobs(self.key_shares).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> UnmaskResponse:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(sender=r.u32(), seed_shares=r.blobs(), key_shares=r.blobs())
        r.done()
        return out


@dataclass(frozen=True, repr=False)
class ShareBundle:
    """The plaintext of a share bundle: sender's shares of b_u and s_u^sk for the receiver."""

    TAG: ClassVar[int] = 8
    sender: int
    receiver: int
    seed_share: bytes
    key_share: bytes

    def __repr__(self) -> str:
        return f"ShareBundle(sender={self.sender}, receiver={self.receiver}, <secret>)"

    def to_bytes(self) -> bytes:
        """Canonical bytes."""
        w = _Writer(self.TAG).u32(self.sender).u32(self.receiver)
        return w.blob(self.seed_share).blob(self.key_share).done()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ShareBundle:
        """Inverse of :meth:`to_bytes`."""
        r = _Reader(data, cls.TAG, cls.__name__)
        out = cls(sender=r.u32(), receiver=r.u32(), seed_share=r.blob(), key_share=r.blob())
        r.done()
        return out


Message = (
    AdvertiseKeys
    | KeyDirectory
    | ShareKeys
    | ShareDelivery
    | MaskedInput
    | UnmaskRequest
    | UnmaskResponse
)

_TYPES: dict[int, type[Message]] = {
    kind.TAG: kind
    for kind in (
        AdvertiseKeys,
        KeyDirectory,
        ShareKeys,
        ShareDelivery,
        MaskedInput,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Any protocol message from its bytes (dispatch on the tag byte)."""
    raw = bytes(data)
    if not raw or raw[0] not in _TYPES:
        raise MalformedMessage(f"unknown message tag {raw[0] if raw else None}")
    return _TYPES[raw[0]].from_bytes(raw)
