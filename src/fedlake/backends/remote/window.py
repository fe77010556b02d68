"""FedBuff on the deployed server: who trains which model version, and what has arrived.

The :class:`Window` is the coordinator's bookkeeping when ``[fedbuff]`` is on (the
coordinator holds its lock around every call). A client that asks for work gets a *slot*
on the newest version while fewer than ``concurrency`` slots are taken; its reply (or
failure) frees the slot and waits in :attr:`Window.arrivals` until a server step takes
it. A client whose outcome waits, or was taken by the step being filled, gets no new
slot before the next step: each step holds at most one update per client, the bound
central DP's sensitivity needs. A slot not answered within the timeout expires: the
client counts as a straggler, and its late reply is refused.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedlake.core.task import ClientFailure, ClientOutcome, FailureReason, Tag

if TYPE_CHECKING:  # the coordinator imports this module
    from fedlake.backends.remote.coordinator import Attempt

__all__ = ["Slot", "Window"]


@dataclass
class Slot:
    """A client's pulled task and when its slot expires (``time.time()``)."""

    attempt: Attempt
    expires: float


class Window:
    """FedBuff's slots, waiting outcomes and the step being filled (see the module doc)."""

    def __init__(self, concurrency: int, timeout_s: float) -> None:
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.current: Attempt | None = None
        self.slots: dict[str, Slot] = {}
        self.waiting: set[str] = set()  # outcome delivered, not yet taken by a step
        self.taken: set[str] = set()  # taken by the step being filled
        self.arrivals: queue.Queue[tuple[Tag, ClientOutcome]] = queue.Queue()
        self.answered: dict[str, tuple[Tag, str]] = {}  # a client's last reply: tag, digest

    def publish(self, attempt: Attempt) -> None:
        """``attempt`` is the version clients pull from now on; a new step begins."""
        self.current = attempt
        self.taken.clear()

    def eligible(self, client: str) -> bool:
        """Whether ``client`` may get a new slot now."""
        return client not in self.slots and client not in self.waiting and client not in self.taken

    def free(self) -> int:
        """Slots free on the current version (0 before one is published)."""
        return 0 if self.current is None else max(0, self.concurrency - len(self.slots))

    def assign(self, client: str, now: float) -> Slot | None:
        """``client``'s slot: the one it holds, a new one on the current version, or None."""
        slot = self.slots.get(client)
        if slot is not None:
            return slot
        if self.current is None or not self.eligible(client) or self.free() == 0:
            return None
        slot = self.slots[client] = Slot(self.current, now + self.timeout_s)
        return slot

    def holder(self, client: str, tag: Tag) -> Attempt | None:
        """The attempt ``client`` holds a slot on when it is ``tag``, else None."""
        slot = self.slots.get(client)
        return slot.attempt if slot is not None and slot.attempt.tag == tag else None

    def deliver(self, client: str, outcome: ClientOutcome) -> None:
        """``client``'s outcome for its slot: the slot frees, the outcome waits for a step."""
        slot = self.slots.pop(client)
        self.waiting.add(client)
        self.arrivals.put((slot.attempt.tag, outcome))

    def take(self, client: str) -> None:
        """A step took ``client``'s waiting outcome."""
        self.waiting.discard(client)
        self.taken.add(client)

    def expire(self, now: float) -> list[str]:
        """Free the slots past their time; their clients (straggler failures wait)."""
        late = [c for c, slot in self.slots.items() if slot.expires <= now]
        for client in late:
            fetched = client in self.slots[client].attempt.fetched
            reason = FailureReason.STRAGGLER if fetched else FailureReason.UNAVAILABLE
            what = "no reply" if fetched else "did not fetch the task"
            self.deliver(
                client, ClientFailure(client, reason, f"{what} within {self.timeout_s:g} s")
            )
        return late
