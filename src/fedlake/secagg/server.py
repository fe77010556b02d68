"""The server's side of SecAgg+: collect, route, check, and unmask only the sum.

A :class:`ServerSession` takes each client message with :meth:`~ServerSession.receive`
(refusing bad ones with a typed, recorded :class:`~fedlake.secagg.errors.Rejected`) and
closes each stage with a ``close_*`` method that returns what to send next. Survivor sets
shrink stage by stage: U1 (advertised) >= U2 (shared) >= U3 (masked input) >= U4
(answered the unmasking). The round aborts, with the numbers, as soon as some secret that
will be needed has fewer than t holders left, or the survivors' graph falls apart (its
pieces' partial sums would be unmasked); Bonawitz et al., CCS 2017; Bell et al., CCS 2020.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fedlake.secagg import keys
from fedlake.secagg.config import SecAggConfig
from fedlake.secagg.errors import (
    DuplicateMessage,
    LateMessage,
    MalformedMessage,
    MalformedVector,
    ProtocolViolation,
    Rejected,
    RoundAborted,
    UndecryptableShares,
    UnknownSender,
    WrongStage,
)
from fedlake.secagg.masking import add_pair_mask, add_self_mask
from fedlake.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Message,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedlake.secagg.prg import SEED_BYTES
from fedlake.secagg.ring import dtype_for, packed_size, reduce, unpack
from fedlake.secagg.shamir import Share, combine
from fedlake.secagg.survivors import needed_secrets, prune, unrecoverable

__all__ = ["Aggregate", "ServerSession", "ServerStage"]


class ServerStage(enum.IntEnum):
    """Which messages the server collects now."""

    ADVERTISE = 0
    SHARE = 1
    MASK = 2
    UNMASK = 3
    DONE = 4
    ABORTED = 5


@dataclass(frozen=True)
class Aggregate:
    """The outcome of a round: the sum of the survivors' inputs mod R, and who is in it.

    Attributes:
        total: sum over ``survivors`` of x_u mod 2^bits.
        survivors: U3, the clients whose inputs are summed.
        dropped: clients in U2 (shared their keys) whose inputs are not in the sum.
        stage_sizes: |U1|, |U2|, |U3|, |U4|.
        rejected: how many messages were refused (see ``ServerSession.rejections``).
    """

    total: np.ndarray = field(repr=False)
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    stage_sizes: tuple[int, int, int, int]
    rejected: int


_EXPECTED: dict[ServerStage, type] = {
    ServerStage.ADVERTISE: AdvertiseKeys,
    ServerStage.SHARE: ShareKeys,
    ServerStage.MASK: MaskedInput,
    ServerStage.UNMASK: UnmaskResponse,
}


class ServerSession:
    """The server of one SecAgg+ round; holds no secret, sees only masked data."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.stage = ServerStage.ADVERTISE
        self.rejections: list[Rejected] = []
        self.excluded: dict[int, str] = {}  # client -> why the server left it out
        self.abort_reason: str | None = None
        self._keys: dict[int, AdvertiseKeys] = {}
        self._bundles: dict[int, dict[int, bytes]] = {}
        self._received: set[int] = set()  # senders of masked inputs, accepted or not
        self._survivors: list[int] = []
        self._responses: dict[int, UnmaskResponse] = {}
        self._u1: frozenset[int] = frozenset()
        self._u2: frozenset[int] = frozenset()
        self._u3: frozenset[int] = frozenset()
        self._sum = np.zeros(config.length, dtype=dtype_for(config.bits))

    # -- receiving ---------------------------------------------------------------------

    def _reject(self, kind: type[Rejected], reason: str, sender: int | None) -> Rejected:
        """Record a refusal and return it for raising."""
        error = kind(reason, stage=self.stage.name, sender=sender)
        self.rejections.append(error)
        return error

    def _abort(self, reason: str) -> RoundAborted:
        """Enter ABORTED for good and return the error to raise."""
        self.stage, self.abort_reason = ServerStage.ABORTED, reason
        return RoundAborted(reason)

    def receive(self, message: Message) -> None:
        """Take one client message of the current stage.

        Raises:
            Rejected: the message is refused (and recorded in :attr:`rejections`); the
                round goes on without it.
            RoundAborted: the round was aborted earlier.
        """
        if self.stage == ServerStage.ABORTED:
            raise RoundAborted(self.abort_reason or "aborted")
        expected = _EXPECTED.get(self.stage)
        sender = getattr(message, "sender", None)
        if isinstance(message, MaskedInput) and self.stage > ServerStage.MASK:
            raise self._reject(
                LateMessage,
                "masked input after the survivors were fixed: it is never unmasked",
                sender,
            )
        if expected is None or not isinstance(message, expected):
            name = expected.__name__ if expected else "no message"
            raise self._reject(WrongStage, f"expected {name}, got {type(message).__name__}", sender)
        if isinstance(message, AdvertiseKeys):
            self._advertise(message)
        elif isinstance(message, ShareKeys):
            self._share(message)
        elif isinstance(message, MaskedInput):
            self._mask(message)
        elif isinstance(message, UnmaskResponse):
            self._unmask(message)

    def _check_sender(self, sender: int, eligible: Iterable[int], seen: Iterable[int]) -> None:
        """Reject unknown or repeated senders."""
        if sender not in eligible:
            raise self._reject(UnknownSender, "not a participant of this stage", sender)
        if sender in seen:
            raise self._reject(DuplicateMessage, "second message in this stage", sender)

    def _advertise(self, message: AdvertiseKeys) -> None:
        """Stage 0: record a client's public keys."""
        self._check_sender(message.sender, self.config.clients, self._keys)
        published = {k for a in self._keys.values() for k in (a.encryption_key, a.masking_key)}
        try:
            both = (
                keys.check_public_key(message.encryption_key),
                keys.check_public_key(message.masking_key),
            )
        except ValueError as exc:
            raise self._reject(ProtocolViolation, str(exc), message.sender) from exc
        if both[0] == both[1] or published & set(both):
            raise self._reject(ProtocolViolation, "a public key already in use", message.sender)
        self._keys[message.sender] = message

    def _share(self, message: ShareKeys) -> None:
        """Stage 1: record a client's bundles, exactly one per advertised neighbour."""
        u = message.sender
        self._check_sender(u, self._u1, self._bundles)
        holders = self.config.graph.neighbours(u) & self._u1
        if set(message.ciphertexts) != holders:
            raise self._reject(
                ProtocolViolation,
                f"expected bundles for {sorted(holders)}, got {sorted(message.ciphertexts)}",
                u,
            )
        self._bundles[u] = dict(message.ciphertexts)

    def _mask(self, message: MaskedInput) -> None:
        """Stage 2: check and add a masked vector to the running sum."""
        u, config = message.sender, self.config
        self._check_sender(u, self._u2, self._received)
        self._received.add(u)
        expected = packed_size(config.length, config.bits)
        if len(message.vector) != expected:
            raise self._reject(
                MalformedVector, f"expected {expected} bytes, got {len(message.vector)}", u
            )
        peers = config.graph.neighbours(u) & self._u2
        if not set(message.undecryptable) <= peers:
            raise self._reject(
                ProtocolViolation, f"reports bundles of non-peers {message.undecryptable}", u
            )
        try:
            vector = unpack(message.vector, config.length, config.bits)
        except MalformedMessage as exc:
            raise self._reject(MalformedVector, str(exc), u) from exc
        for v in message.undecryptable:
            self.rejections.append(
                UndecryptableShares(
                    f"bundle from client {v} failed to open", stage="MASK", sender=u
                )
            )
        reduce(np.add(self._sum, vector, out=self._sum), config.bits)
        self._survivors.append(u)

    def _unmask(self, message: UnmaskResponse) -> None:
        """Stage 3: check a client's revealed shares (right kind, right holder, parseable)."""
        w, config = message.sender, self.config
        self._check_sender(w, self._u3, self._responses)
        peers = config.graph.neighbours(w)
        alive, dropped = peers & self._u3, (peers & self._u2) - self._u3
        if not set(message.seed_shares) <= alive or not set(message.key_shares) <= dropped:
            raise self._reject(
                ProtocolViolation,
                f"seed shares must be for survivors in {sorted(alive)} and key shares for "
                f"dropped peers in {sorted(dropped)}, got {sorted(message.seed_shares)} and "
                f"{sorted(message.key_shares)}",
                w,
            )
        for raw in [*message.seed_shares.values(), *message.key_shares.values()]:
            try:
                share = Share.from_bytes(raw)
            except MalformedMessage as exc:
                raise self._reject(ProtocolViolation, f"bad share: {exc}", w) from exc
            if (share.x, share.threshold, share.length) != (w, config.threshold, SEED_BYTES):
                raise self._reject(
                    ProtocolViolation,
                    f"expected a share at x={w} of threshold {config.threshold} for "
                    f"{SEED_BYTES} bytes, got x={share.x}, threshold {share.threshold}, "
                    f"{share.length} bytes",
                    w,
                )
        self._responses[w] = message

    # -- closing stages ------------------------------------------------------------------

    def _expect(self, stage: ServerStage) -> None:
        """Raise unless the server is in ``stage``."""
        if self.stage == ServerStage.ABORTED:
            raise RoundAborted(self.abort_reason or "aborted")
        if self.stage != stage:
            raise WrongStage(
                f"expected stage {stage.name}, got {self.stage.name}", stage=self.stage.name
            )

    def _prune(self, members: set[int], why: str) -> frozenset[int]:
        """Keep the clients with >= t neighbours among ``members`` (recording the rest)."""
        kept, removed = prune(members, self.config.graph, self.config.threshold)
        for u in removed:
            self.excluded[u] = f"fewer than t={self.config.threshold} neighbours {why}"
        return kept

    def close_advertise(self) -> dict[int, KeyDirectory]:
        """End stage 0: each remaining client's directory of its neighbours' keys."""
        self._expect(ServerStage.ADVERTISE)
        self._u1 = self._prune(set(self._keys), "advertised keys")
        if not self._u1:
            raise self._abort(
                f"{len(self._keys)} clients advertised keys, but none has t="
                f"{self.config.threshold} advertising neighbours"
            )
        graph = self.config.graph
        self.stage = ServerStage.SHARE
        return {
            u: KeyDirectory(u, tuple(self._keys[v] for v in sorted(graph.neighbours(u) & self._u1)))
            for u in sorted(self._u1)
        }

    def close_share_keys(self) -> dict[int, ShareDelivery]:
        """End stage 1: route the bundles among the clients that shared (U2)."""
        self._expect(ServerStage.SHARE)
        self._u2 = self._prune(set(self._bundles), "shared keys")
        if not self._u2:
            raise self._abort(
                f"{len(self._bundles)} clients shared keys, but none has t="
                f"{self.config.threshold} neighbours that did"
            )
        graph = self.config.graph
        self.stage = ServerStage.MASK
        return {
            u: ShareDelivery(u, {v: self._bundles[v][u] for v in graph.neighbours(u) & self._u2})
            for u in sorted(self._u2)
        }

    def close_masked_input(self) -> dict[int, UnmaskRequest]:
        """End stage 2: fix the survivors U3 and ask them for shares.

        Raises:
            RoundAborted: fewer than t survivors, some needed secret with fewer than t
                holders among them, or survivors whose graph is disconnected.
        """
        self._expect(ServerStage.MASK)
        self._u3 = frozenset(self._survivors)
        config = self.config
        reason = unrecoverable(config.graph, config.threshold, self._u2, self._u3)
        if reason is not None:
            raise self._abort(reason)
        self.stage = ServerStage.UNMASK
        survivors = tuple(sorted(self._u3))
        return {u: UnmaskRequest(u, survivors) for u in survivors}

    def close_unmask(self) -> Aggregate:
        """End stage 3: rebuild the needed secrets, remove the masks, return the sum.

        Raises:
            RoundAborted: some needed secret has fewer than t shares, or its shares are
                inconsistent (a rebuilt key that does not match the advertised one).
        """
        self._expect(ServerStage.UNMASK)
        config, t = self.config, self.config.threshold
        total = self._sum.copy()
        for u, holders in sorted(needed_secrets(config.graph, self._u2, self._u3).items()):
            kind = "seed_shares" if u in self._u3 else "key_shares"
            shares = [
                Share.from_bytes(getattr(self._responses[w], kind)[u])
                for w in sorted(holders)
                if w in self._responses and u in getattr(self._responses[w], kind)
            ]
            if len(shares) < t:
                raise self._abort(
                    f"client {u}'s {'self-mask seed' if u in self._u3 else 'mask key'} needs "
                    f"t={t} shares, got {len(shares)} from its {len(holders)} surviving "
                    f"neighbours"
                )
            try:
                secret = combine(shares)
            except ValueError as exc:
                raise self._abort(f"client {u}'s shares are inconsistent: {exc}") from exc
            if u in self._u3:
                add_self_mask(total, secret, bits=config.bits, sign=-1)
                continue
            if keys.public_key(secret) != self._keys[u].masking_key:
                raise self._abort(f"client {u}'s rebuilt mask key does not match its public key")
            rebuilt = keys.private_key(secret)
            for w in sorted(holders):
                seed = keys.pairwise_seed(
                    rebuilt,
                    self._keys[w].masking_key,
                    run_id=config.run_id,
                    round_=config.round,
                    pair=(u, w),
                )
                add_pair_mask(total, seed, me=u, peer=w, bits=config.bits)
        self.stage = ServerStage.DONE
        return Aggregate(
            total=total,
            survivors=tuple(sorted(self._u3)),
            dropped=tuple(sorted(self._u2 - self._u3)),
            stage_sizes=(len(self._u1), len(self._u2), len(self._u3), len(self._responses)),
            rejected=len(self.rejections),
        )
