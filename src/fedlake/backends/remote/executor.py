"""The server's executor: a round's task goes to remote clients, their replies come back.

``map_clients`` opens the attempt on the :class:`Coordinator` (waking the sampled clients'
long-polls), yields each reply or failure as it arrives, and at the deadline yields the
clients that never answered: ``unavailable`` if they never fetched the task, ``straggler``
if they fetched it but did not reply in time.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Sequence

from fedlake.backends.remote.coordinator import Coordinator
from fedlake.core.task import ClientFailure, ClientOutcome, ClientTask, FailureReason

__all__ = ["RemoteExecutor"]


class RemoteExecutor:
    """Runs a cohort on clients that reach the server over the network.

    Args:
        coordinator: the state shared with the server's HTTP handlers.
        round_timeout_s: how long an attempt waits for its cohort's replies.
    """

    def __init__(self, coordinator: Coordinator, *, round_timeout_s: float) -> None:
        if not round_timeout_s > 0:
            raise ValueError(f"round_timeout_s must be > 0, got {round_timeout_s}")
        self.coordinator = coordinator
        self.round_timeout_s = float(round_timeout_s)

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """The cohort's outcomes as they arrive; the silent ones' failures at the deadline."""
        attempt = self.coordinator.open_attempt(task, cohort, self.round_timeout_s)
        waiting = set(cohort)
        try:
            while waiting:
                left = attempt.deadline - time.time()
                if left <= 0:
                    break
                try:
                    outcome = attempt.outcomes.get(timeout=min(left, 1.0))
                except queue.Empty:
                    continue
                if outcome.client_id in waiting:
                    waiting.discard(outcome.client_id)
                    yield outcome
        finally:
            fetched = set(self.coordinator.close_attempt(attempt))
        while True:  # replies that raced the deadline still count
            try:
                outcome = attempt.outcomes.get_nowait()
            except queue.Empty:
                break
            if outcome.client_id in waiting:
                waiting.discard(outcome.client_id)
                yield outcome
        for cid in cohort:
            if cid not in waiting:
                continue
            if cid in fetched:
                yield ClientFailure(
                    cid,
                    FailureReason.STRAGGLER,
                    f"straggler: no reply within the round's {self.round_timeout_s:g} s",
                )
            else:
                yield ClientFailure(
                    cid,
                    FailureReason.UNAVAILABLE,
                    f"unavailable: did not fetch the task within {self.round_timeout_s:g} s",
                )

    def close(self) -> None:
        """Nothing to release (the server owns the connections)."""
