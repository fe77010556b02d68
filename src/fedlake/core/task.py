"""What travels between the server and a client in a round: a task down, a reply or a failure up.

Only bytes, scalars and typed reasons: nothing simulated, nothing pickled, nothing a real
client could not receive or send over a network. The model travels as its encoded
download message (``fedlake.compression.messages``), updates as their upload payloads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "FULL_WORK",
    "STRAGGLER",
    "ClientFailure",
    "ClientOutcome",
    "ClientReply",
    "ClientTask",
    "FailureReason",
    "Instructions",
    "SECURE_STAGE",
    "SecureStage",
    "Tag",
    "local_steps",
]

Tag = tuple[int, int]  # (round, attempt) of a contribution, 0-based round
STRAGGLER = "straggler"  # the start of a straggler's failure message
SECURE_STAGE = "secagg.stage"  # the extras key naming a secure-aggregation stage


class SecureStage(StrEnum):
    """The four stages of a secure-aggregation attempt (SecAgg+), in order; only
    ``masked_input`` trains."""

    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"


@dataclass(frozen=True)
class Instructions:
    """How much of its local work one client does this round (deadlines, step caps).

    Args:
        fraction: share of the configured local steps to complete, in (0, 1] (FedProx's
            stragglers run 1..E-1 of E epochs: ``e / E``).
        max_steps: steps the client can finish before the round's deadline (None: none).
        drop_partial: the server does not wait for partial work: a client that cannot
            finish everything sends nothing (a straggler failure).
    """

    fraction: float = 1.0
    max_steps: int | None = None
    drop_partial: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.fraction, int | float) and 0 < self.fraction <= 1):
            raise ValueError(f"work fraction must be in (0, 1], got {self.fraction!r}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")

    def steps(self, total: int) -> int:
        """Steps done out of ``total``: the fraction (rounded, at least one), then the cap."""
        done = total if self.fraction >= 1 else max(1, min(total, round(self.fraction * total)))
        return done if self.max_steps is None else min(done, self.max_steps)


FULL_WORK = Instructions()


def local_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    """Minibatch steps of full local training: ``epochs * ceil(n / batch_size)``."""
    return int(epochs) * math.ceil(int(num_examples) / int(batch_size))


@dataclass(frozen=True)
class ClientTask:
    """The round's message to its clients.

    Args:
        round: the round, 0-based.
        attempt: the attempt of this round (a retry with a fresh cohort is attempt 1, ...).
        seed: the run's seed; every client generator derives from (seed, round, attempt,
            client).
        model: the encoded global model (the download message).
        extras: other encoded vectors the algorithm ships with the model, by name (e.g.
            SCAFFOLD's server control variate).
        instructions: per client, the part of its work it does (clients not listed do
            all of it).
        acks: per client, the (round, attempt) of its last contribution the server
            aggregated; a client commits state it kept for a contribution only once that
            contribution is acknowledged (SCAFFOLD's control variate).
        inbox: per client, a message meant for that client alone (a secure-aggregation
            stage's key directory, share delivery or unmasking request); empty otherwise.
    """

    round: int
    attempt: int
    seed: int
    model: bytes
    extras: Mapping[str, bytes] = field(default_factory=dict)
    instructions: Mapping[str, Instructions] = field(default_factory=dict)
    acks: Mapping[str, Tag] = field(default_factory=dict)
    inbox: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def tag(self) -> Tag:
        """This task's (round, attempt)."""
        return (self.round, self.attempt)

    @property
    def stage(self) -> SecureStage | None:
        """The secure-aggregation stage this task asks for (None: a plain round)."""
        raw = self.extras.get(SECURE_STAGE)
        return None if raw is None else SecureStage(bytes(raw).decode("ascii"))

    def instructions_for(self, client_id: str) -> Instructions:
        """What ``client_id`` is asked to do (all its work unless told otherwise)."""
        return self.instructions.get(client_id, FULL_WORK)

    def only(self, client_ids: Sequence[str]) -> ClientTask:
        """This task carrying only the per-client entries of ``client_ids`` (one chunk)."""
        keep = set(client_ids)
        return replace(
            self,
            instructions={c: w for c, w in self.instructions.items() if c in keep},
            acks={c: t for c, t in self.acks.items() if c in keep},
            inbox={c: m for c, m in self.inbox.items() if c in keep},
        )

    def with_instructions(self, instructions: Mapping[str, Instructions]) -> ClientTask:
        """This task with ``instructions`` added (they win over existing entries)."""
        return replace(self, instructions={**self.instructions, **instructions})


@dataclass(frozen=True)
class ClientReply:
    """A client's answer: encoded vectors by name (``delta`` always), a weight and metrics."""

    client_id: str
    payloads: Mapping[str, bytes | memoryview]  # a memoryview: read-only, never written
    weight: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes on the wire: the payloads' lengths."""
        return int(sum(len(p) for p in self.payloads.values()))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its payloads as ``bytes``: a payload may be a read-only view (of a
        frame received, or of a recycled buffer), which pickle cannot carry."""
        payloads = {k: bytes(v) for k, v in self.payloads.items()}
        return (ClientReply, (self.client_id, payloads, self.weight, self.metrics))


class FailureReason(StrEnum):
    """Why a sampled client sent nothing."""

    UNAVAILABLE = "unavailable"  # never got the model (offline, a simulated dropout)
    STRAGGLER = "straggler"  # got the model, could not finish by the deadline
    REFUSED = "refused"  # declined the round (its own privacy budget is spent)
    ERROR = "error"  # crashed: bad data, diverged training, a bug
    LOST = "lost"  # its worker or connection was lost

    @property
    def status(self) -> str:
        """The client_updates status of such a failure: ``dropped`` or ``failed``."""
        return (
            "dropped" if self in (FailureReason.UNAVAILABLE, FailureReason.STRAGGLER) else "failed"
        )


@dataclass(frozen=True)
class ClientFailure:
    """A sampled client that returned nothing, with a typed reason and a message."""

    client_id: str
    reason: FailureReason
    message: str

    @property
    def status(self) -> str:
        """``dropped`` (unavailable, straggler) or ``failed`` (refused, error, lost)."""
        return self.reason.status


ClientOutcome = ClientReply | ClientFailure
