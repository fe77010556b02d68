"""The client's side of SecAgg+: a state machine over explicit, persistable state.

A :class:`ClientSession` answers the server's four messages in order (Bonawitz et al.,
CCS 2017, Figure 4, without the signatures and the consistency round of the malicious
setting; Bell et al., CCS 2020, restricting every step to the client's graph
neighbours). Its secrets (two X25519 private keys, the self-mask seed b_u, the shares it
holds for its neighbours) live in a :class:`ClientState` that the caller may persist
between stages (``to_bytes``/``from_bytes``) and that is emptied once the client has
answered the unmasking request, or on :meth:`ClientSession.erase`.
"""

from __future__ import annotations

import enum
import os
import random as _random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from fedlake.secagg import keys
from fedlake.secagg.config import SecAggConfig
from fedlake.secagg.errors import (
    InvalidCiphertext,
    MalformedMessage,
    ProtocolViolation,
    WrongStage,
)
from fedlake.secagg.masking import add_pair_mask, add_self_mask
from fedlake.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    ShareBundle,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedlake.secagg.prg import SEED_BYTES
from fedlake.secagg.ring import dtype_for, pack
from fedlake.secagg.shamir import Share, split
from fedlake.secagg.wire import Reader, Writer

__all__ = ["ClientSession", "ClientStage", "ClientState"]

_STATE_TAG = 9


class ClientStage(enum.IntEnum):
    """What the client waits for next."""

    KEYS = 0  # created: advertise, then wait for the key directory
    SHARES = 1  # sent its share bundles: wait for the bundles addressed to it
    UNMASK = 2  # sent its masked input: wait for the unmasking request
    DONE = 3  # answered (or erased): holds no secret


@dataclass(frozen=True, repr=False)
class ClientState:
    """Everything a client needs between stages; secret, persist it only encrypted at rest.

    Attributes:
        config: the round's public parameters.
        client: this client's id.
        stage: what it waits for.
        encryption_private: the ``c`` X25519 private key (share bundles).
        masking_private: the ``s`` X25519 private key (pairwise mask seeds).
        seed: b_u, the self-mask seed.
        peers: neighbours' advertised keys, as received in the key directory.
        held: shares of each neighbour's (b_v, s_v key) this client holds, as bytes.
        masked_with: the neighbours its masked input holds pairwise masks with.
    """

    config: SecAggConfig
    client: int
    stage: ClientStage
    encryption_private: bytes = b""
    masking_private: bytes = b""
    seed: bytes = b""
    peers: Mapping[int, AdvertiseKeys] = field(default_factory=dict)
    held: Mapping[int, tuple[bytes, bytes]] = field(default_factory=dict)
    masked_with: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"ClientState(client={self.client}, stage={self.stage.name}, <secrets>)"

    def to_bytes(self) -> bytes:
        """Canonical bytes (secrets included: store them as you would a private key)."""
        w = Writer(_STATE_TAG).blob(self.config.to_bytes()).u32(self.client).u32(self.stage)
        w.blob(self.encryption_private).blob(self.masking_private).blob(self.seed)
        w.blobs({v: p.encryption_key + p.masking_key for v, p in self.peers.items()})
        w.blobs({v: ShareBundle(v, self.client, *pair).to_bytes() for v, pair in self.held.items()})
        return w.ids(tuple(sorted(self.masked_with))).done()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState:
        """Inverse of :meth:`to_bytes`."""
        r = Reader(data, _STATE_TAG, cls.__name__)
        config = SecAggConfig.from_bytes(r.blob())
        client, stage = r.u32(), r.u32()
        if stage not in ClientStage.__members__.values():
            raise MalformedMessage(f"unknown client stage {stage}")
        secrets = r.blob(), r.blob(), r.blob()
        peers = {
            v: AdvertiseKeys(v, both[: keys.KEY_BYTES], both[keys.KEY_BYTES :])
            for v, both in r.blobs().items()
        }
        held = {}
        for v, raw in r.blobs().items():
            bundle = ShareBundle.from_bytes(raw)
            held[v] = (bundle.seed_share, bundle.key_share)
        masked_with = r.ids()
        r.done()
        return cls(config, client, ClientStage(stage), *secrets, peers, held, masked_with)


class ClientSession:
    """One client's run through a SecAgg+ round; each method answers one server message.

    Args:
        config: the round's public parameters (identical at every party).
        client: this client's id, one of ``config.clients``.
        random: source of every secret; None (the default, and the only safe choice
            outside tests) uses the operating system's entropy.
    """

    def __init__(
        self, config: SecAggConfig, client: int, *, random: _random.Random | None = None
    ) -> None:
        if client not in config.clients:
            raise ValueError(
                f"client must be one of the round's {len(config.clients)}, got {client}"
            )
        encryption, masking = keys.generate_keypair(random), keys.generate_keypair(random)
        seed = os.urandom(SEED_BYTES) if random is None else random.randbytes(SEED_BYTES)
        self._random = random
        self.state = ClientState(
            config=config,
            client=client,
            stage=ClientStage.KEYS,
            encryption_private=encryption.private,
            masking_private=masking.private,
            seed=seed,
        )

    @classmethod
    def restore(cls, state: ClientState, *, random: _random.Random | None = None) -> ClientSession:
        """A session resuming from a persisted state."""
        session = cls.__new__(cls)
        session._random = random
        session.state = state
        return session

    def _expect(self, stage: ClientStage, what: str) -> None:
        """Raise WrongStage unless the client waits for ``stage``."""
        if self.state.stage != stage:
            raise WrongStage(
                f"expected stage {stage.name} to {what}, got {self.state.stage.name}",
                stage=self.state.stage.name,
                sender=self.state.client,
            )

    def _violation(self, reason: str) -> ProtocolViolation:
        """A ProtocolViolation in the current stage (the server sent something wrong)."""
        return ProtocolViolation(reason, stage=self.state.stage.name, sender=self.state.client)

    def advertise(self) -> AdvertiseKeys:
        """Stage 0: the client's two public keys (may be resent while in stage KEYS)."""
        self._expect(ClientStage.KEYS, "advertise keys")
        s = self.state
        return AdvertiseKeys(
            sender=s.client,
            encryption_key=keys.public_key(s.encryption_private),
            masking_key=keys.public_key(s.masking_private),
        )

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Stage 1: Shamir-share b_u and the ``s`` private key among the advertised neighbours.

        Raises:
            ProtocolViolation: a directory for another client, with non-neighbours, fewer
                than t neighbours, malformed keys, or a public key used twice.
        """
        self._expect(ClientStage.KEYS, "share keys")
        s, config = self.state, self.state.config
        if directory.receiver != s.client:
            raise self._violation(f"key directory for client {directory.receiver}")
        neighbours = config.graph.neighbours(s.client)
        peers = {p.sender: p for p in directory.peers}
        if len(peers) != len(directory.peers) or not peers.keys() <= neighbours:
            raise self._violation(
                f"expected distinct neighbours in {sorted(neighbours)}, got {sorted(peers)}"
            )
        if len(peers) < config.threshold:
            raise self._violation(
                f"expected >= t={config.threshold} neighbours in the directory, got {len(peers)}"
            )
        own = self.advertise()
        published = [own.encryption_key, own.masking_key]
        for p in peers.values():
            try:
                published += [keys.check_public_key(p.encryption_key)]
                published += [keys.check_public_key(p.masking_key)]
            except ValueError as exc:
                raise self._violation(f"client {p.sender}: {exc}") from exc
        if len(set(published)) != len(published):
            raise self._violation("a public key appears twice in the directory")
        holders = sorted(peers)
        t = config.threshold
        seed_shares = split(s.seed, threshold=t, holders=holders, rng=self._random)
        key_shares = split(s.masking_private, threshold=t, holders=holders, rng=self._random)
        ciphertexts = {}
        mine = keys.private_key(s.encryption_private)
        for v in holders:
            bundle = ShareBundle(s.client, v, seed_shares[v].to_bytes(), key_shares[v].to_bytes())
            route = keys.Route(config.run_id, config.round, s.client, v)
            try:
                key = keys.share_key(mine, peers[v].encryption_key, route)
            except ValueError as exc:  # a low-order public key
                raise self._violation(f"client {v}'s encryption key: {exc}") from exc
            associated = keys.associated_data(route)
            ciphertexts[v] = keys.encrypt(key, bundle.to_bytes(), associated=associated)
        self.state = replace(s, stage=ClientStage.SHARES, peers=peers)
        return ShareKeys(sender=s.client, ciphertexts=ciphertexts)

    def _open(
        self, sender: int, ciphertext: bytes, mine: keys.X25519PrivateKey
    ) -> tuple[bytes, bytes]:
        """Decrypt and check one neighbour's bundle: (seed share, key share) as bytes."""
        s, config = self.state, self.state.config
        route = keys.Route(config.run_id, config.round, sender, s.client)
        key = keys.share_key(mine, s.peers[sender].encryption_key, route)
        plain = keys.decrypt(key, ciphertext, associated=keys.associated_data(route))
        bundle = ShareBundle.from_bytes(plain)
        shares = Share.from_bytes(bundle.seed_share), Share.from_bytes(bundle.key_share)
        if (bundle.sender, bundle.receiver) != (sender, s.client) or any(
            (sh.x, sh.threshold, sh.length) != (s.client, config.threshold, SEED_BYTES)
            for sh in shares
        ):
            raise MalformedMessage(f"bundle from {sender} does not match its routing")
        return bundle.seed_share, bundle.key_share

    def masked_input(self, delivery: ShareDelivery, values: np.ndarray) -> MaskedInput:
        """Stage 2: y_u = x_u + PRG(b_u) + sum_v sign(u, v) PRG(s_uv) mod R, packed.

        Args:
            delivery: the share bundles of the neighbours that shared (U2).
            values: x_u, ``config.length`` integers in [0, 2^bits) (see
                :class:`fedlake.secagg.encoding.FixedPoint`).

        Bundles that fail to decrypt (tampered, misrouted, replayed) are reported in the
        message; the pairwise masks with their senders are still applied.
        """
        self._expect(ClientStage.SHARES, "mask its input")
        s, config = self.state, self.state.config
        x = np.asarray(values)
        if x.shape != (config.length,) or x.dtype.kind not in "ui":
            raise ValueError(f"expected {config.length} integers, got {x.dtype} of shape {x.shape}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= 1 << config.bits):
            raise ValueError(f"expected values in [0, 2^{config.bits}), got some outside")
        if delivery.receiver != s.client:
            raise self._violation(f"share delivery for client {delivery.receiver}")
        senders = set(delivery.ciphertexts)
        if not senders <= s.peers.keys():
            raise self._violation(f"bundles from non-peers {sorted(senders - s.peers.keys())}")
        if len(senders) < config.threshold:
            raise self._violation(
                f"expected bundles from >= t={config.threshold} neighbours, got {len(senders)}"
            )
        held, undecryptable = {}, []
        mine = keys.private_key(s.encryption_private)
        for v in sorted(senders):
            try:
                held[v] = self._open(v, delivery.ciphertexts[v], mine)
            except (InvalidCiphertext, MalformedMessage):
                undecryptable.append(v)
        y = x.astype(dtype_for(config.bits))
        add_self_mask(y, s.seed, bits=config.bits)
        masking = keys.private_key(s.masking_private)
        for v in sorted(senders):
            seed = keys.pairwise_seed(
                masking,
                s.peers[v].masking_key,
                run_id=config.run_id,
                round_=config.round,
                pair=(s.client, v),
            )
            add_pair_mask(y, seed, me=s.client, peer=v, bits=config.bits)
        self.state = replace(
            s, stage=ClientStage.UNMASK, held=held, masked_with=tuple(sorted(senders))
        )
        return MaskedInput(
            sender=s.client, vector=pack(y, config.bits), undecryptable=tuple(undecryptable)
        )

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 3: for each neighbour it holds shares of, the b-share if the neighbour
        survived, the key share if it dropped, never both; then forget every secret.

        Raises:
            ProtocolViolation: a request for another client, leaving this client out,
                naming survivors that never shared, or fewer than t survivors.
        """
        self._expect(ClientStage.UNMASK, "unmask")
        s, config = self.state, self.state.config
        survivors = set(request.survivors)
        if request.receiver != s.client or s.client not in survivors:
            raise self._violation(f"unmask request for {request.receiver} omits this client")
        neighbours = config.graph.neighbours(s.client)
        if not (survivors & neighbours) <= set(s.masked_with):
            extra = sorted((survivors & neighbours) - set(s.masked_with))
            raise self._violation(f"survivors {extra} never shared with this client")
        if len(survivors) < config.threshold:
            raise self._violation(
                f"expected >= t={config.threshold} survivors, got {len(survivors)}"
            )
        seed_shares = {v: pair[0] for v, pair in s.held.items() if v in survivors}
        key_shares = {v: pair[1] for v, pair in s.held.items() if v not in survivors}
        self.erase()
        return UnmaskResponse(sender=s.client, seed_shares=seed_shares, key_shares=key_shares)

    def erase(self) -> None:
        """Drop every secret: the state keeps only the configuration and the client id.

        Python cannot wipe memory; this drops the references (and the caller deletes
        any persisted copy).
        """
        self.state = ClientState(self.state.config, self.state.client, ClientStage.DONE)
