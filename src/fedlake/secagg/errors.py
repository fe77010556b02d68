"""What can go wrong in a SecAgg+ round, as types a server can audit and count."""

from __future__ import annotations

__all__ = [
    "DuplicateMessage",
    "InvalidCiphertext",
    "LateMessage",
    "MalformedMessage",
    "MalformedVector",
    "ProtocolViolation",
    "Rejected",
    "RoundAborted",
    "SecAggError",
    "UndecryptableShares",
    "UnknownSender",
    "WrongStage",
]


class SecAggError(Exception):
    """Base class of every secure-aggregation error."""


class MalformedMessage(SecAggError, ValueError):
    """Bytes that do not decode as the expected message (truncated, wrong tag, bad field)."""


class InvalidCiphertext(SecAggError, ValueError):
    """A ciphertext that fails authentication: tampered, misrouted, replayed or truncated."""


class RoundAborted(SecAggError):
    """The round cannot finish securely or correctly; ``reason`` says why, with the numbers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Rejected(SecAggError):
    """One message refused; the round goes on without it while enough clients remain.

    Attributes:
        stage: the stage the receiver was in (``Stage.name``).
        sender: the client the message came from (or claims to), when known.
        reason: what was wrong, in words.
    """

    def __init__(self, reason: str, *, stage: str, sender: int | None = None) -> None:
        super().__init__(
            f"[{stage}] client {sender}: {reason}" if sender else f"[{stage}] {reason}"
        )
        self.stage = stage
        self.sender = sender
        self.reason = reason


class WrongStage(Rejected):
    """A message of another stage than the receiver's current one."""


class UnknownSender(Rejected):
    """A sender that is not (or no longer) a participant of this stage."""


class DuplicateMessage(Rejected):
    """A second message from the same sender in the same stage."""


class LateMessage(Rejected):
    """A masked input from a client already reported dropped: never unmasked twice."""


class MalformedVector(Rejected):
    """A masked vector of the wrong length or with values outside Z_R."""


class ProtocolViolation(Rejected):
    """A message whose content breaks the protocol (wrong recipients, both secrets asked...)."""


class UndecryptableShares(Rejected):
    """A client could not decrypt (tampered, misrouted or replayed) a peer's share bundle."""
