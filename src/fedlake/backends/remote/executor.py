"""The server's executors: a round's task goes to remote clients, their replies come back.

:class:`RemoteExecutor` (synchronous rounds): ``map_clients`` opens the attempt on the
:class:`Coordinator` (waking the sampled clients' long-polls), yields each reply or
failure as it arrives, and at the deadline yields the clients that never answered:
``unavailable`` if they never fetched the task, ``straggler`` if they fetched it but did
not reply in time.
A secure attempt (SecAgg+) is four such calls with the attempt's (round, attempt), one
per stage: the coordinator offers each under its stage's number (``wire.stage_number``),
the masked-input stage (which trains) waits ``round_timeout_s``, the three key-exchange
stages ``key_stage_timeout_s`` (default: the same), and a client silent in a stage is a
protocol dropout.

:class:`BufferedRemoteExecutor` (FedBuff): each step publishes the newest version, which
clients pull into free slots, and takes the first K updates to arrive, from any version
no staler than the maximum.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Sequence

from fedlake.backends.remote.coordinator import Coordinator
from fedlake.core.task import (
    ClientFailure,
    ClientOutcome,
    ClientTask,
    FailureReason,
    SecureStage,
    Tag,
)
from fedlake.orchestration.buffered import FedBuffSettings, Gathered

__all__ = ["BufferedRemoteExecutor", "RemoteExecutor"]


class RemoteExecutor:
    """Runs a cohort on clients that reach the server over the network.

    Args:
        coordinator: the state shared with the server's HTTP handlers.
        round_timeout_s: how long an attempt waits for its cohort's replies.
        key_stage_timeout_s: how long a secure attempt's key-exchange stages (advertise,
            share keys, unmask: no training) wait (None: ``round_timeout_s``).
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        round_timeout_s: float,
        key_stage_timeout_s: float | None = None,
    ) -> None:
        for name, value in (("round", round_timeout_s), ("key_stage", key_stage_timeout_s)):
            if value is not None and not value > 0:
                raise ValueError(f"{name}_timeout_s must be > 0, got {value}")
        self.coordinator = coordinator
        self.round_timeout_s = float(round_timeout_s)
        self.key_stage_timeout_s = key_stage_timeout_s

    def timeout_of(self, task: ClientTask) -> float:
        """How long ``task``'s stage waits for its replies."""
        keys = (SecureStage.ADVERTISE, SecureStage.SHARE_KEYS, SecureStage.UNMASK)
        if self.key_stage_timeout_s is not None and task.stage in keys:
            return float(self.key_stage_timeout_s)
        return self.round_timeout_s

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """The cohort's outcomes as they arrive; the silent ones' failures at the deadline."""
        timeout = self.timeout_of(task)
        attempt = self.coordinator.open_attempt(task, cohort, timeout)
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
                    f"straggler: no reply within {timeout:g} s",
                )
            else:
                yield ClientFailure(
                    cid,
                    FailureReason.UNAVAILABLE,
                    f"unavailable: did not fetch the task within {timeout:g} s",
                )

    def close(self) -> None:
        """Nothing to release (the server owns the connections)."""


class BufferedRemoteExecutor:
    """FedBuff on clients that reach the server over the network (see the module doc).

    Args:
        coordinator: the state shared with the server's HTTP handlers.
        round_timeout_s: how long a step waits for its K updates, and a slot for its reply.
        settings: concurrency, K, maximum staleness and the staleness weight.
    """

    def __init__(
        self, coordinator: Coordinator, *, round_timeout_s: float, settings: FedBuffSettings
    ) -> None:
        if not round_timeout_s > 0:
            raise ValueError(f"round_timeout_s must be > 0, got {round_timeout_s}")
        self.coordinator, self.settings = coordinator, settings
        self.round_timeout_s = float(round_timeout_s)
        self.window = coordinator.buffered(settings.concurrency, self.round_timeout_s)
        self._step = Gathered(settings, 0)
        self._in_flight = 0

    def gather(self, task: ClientTask, size: int) -> list[str]:
        """Publish ``task``; the clients whose outcomes arrived, once ``size`` updates did
        (fewer when the timeout passed first). Stale updates count as failures."""
        self.coordinator.open_attempt(task, (), self.round_timeout_s)
        step = self._step = Gathered(self.settings, task.round)
        end = time.time() + self.round_timeout_s
        while step.good < size:
            self.coordinator.expire()
            left = end - time.time()
            try:  # past the deadline, what already arrived (slots just expired too) counts
                arrivals = self.window.arrivals
                tag, outcome = (
                    arrivals.get(timeout=min(left, 0.5)) if left > 0 else arrivals.get_nowait()
                )
            except queue.Empty:
                if left <= 0:
                    break
                continue
            self.coordinator.take(outcome.client_id)
            step.add(outcome, tag)
        self._in_flight = len(self.window.slots)
        return list(step.outcomes)

    def pulled(self) -> dict[str, Tag]:
        """The ``(round, attempt)`` each gathered client's outcome answers."""
        return dict(self._step.pulled)

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """The gathered outcomes of ``cohort`` (the clients :meth:`gather` returned)."""
        return self._step.take(cohort)

    def round_metrics(self) -> dict[str, int]:
        """The last step's stale updates dropped, largest staleness taken, slots in use."""
        return {**self._step.metrics(), "in_flight": self._in_flight}

    def close(self) -> None:
        """Nothing to release (the server owns the connections)."""
