"""FedBuff in ``fedlake run``: the Federation's steps over simulated devices on a clock.

:class:`ClockExecutor` is the simulator's :class:`~fedlake.orchestration.buffered.
BufferedExecutor`: up to ``concurrency`` devices train at once, each on the version it
pulled; an update arrives its device's (heavy-tailed) duration after the pull, at a time
the device was available (:class:`~fedlake.simulation.devices.DeviceProfiles`). A step
takes the first K arrivals; a device that delivered is replaced at once by another
available one, except by the devices the step being filled already took (one update per
client per step). Training runs through any executor: the devices that pulled a version
are trained together, when the next version is published (or when one of them arrives
first), so ``inline``, ``process`` and ``spark`` all serve.
"""

from __future__ import annotations

import heapq
import pickle
from collections.abc import Iterator, Sequence

import numpy as np

from fedlake.core.task import (
    ClientOutcome,
    ClientTask,
    Tag,
)
from fedlake.orchestration.buffered import FedBuffSettings, Gathered
from fedlake.orchestration.interfaces import Executor
from fedlake.simulation.devices import DeviceProfiles

__all__ = ["ClockExecutor"]

IDLE_S = 3600.0  # nobody available: look again this much later on the clock


class ClockExecutor:
    """FedBuff over simulated devices (see the module docstring); its clock, devices in
    flight and their trained outcomes are saved with every checkpoint (``snapshot``), so
    a resumed run goes on exactly as an uninterrupted one.

    Args:
        inner: trains a version's devices (any executor).
        ids: the population's client ids (device ``i`` is ``ids[i]``).
        profiles: each device's availability and duration.
        settings: concurrency, K, maximum staleness and the staleness weight.
        seed: the draws of which available devices start.
    """

    def __init__(
        self,
        inner: Executor,
        ids: Sequence[str],
        profiles: DeviceProfiles,
        settings: FedBuffSettings,
        seed: int = 0,
    ) -> None:
        self.inner, self.ids, self.profiles, self.settings = inner, list(ids), profiles, settings
        self.rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(43,)))
        self.clock_s = 0.0
        self._seq = 0
        self._events: list[tuple[float, int, int, Tag]] = []  # arrival, seq, device, tag
        self._pending: list[tuple[int, int]] = []  # (seq, device) on the current task
        self._results: dict[int, ClientOutcome] = {}
        self._in_flight: set[int] = set()
        self._taken: set[int] = set()  # devices the step being filled took
        self._task: ClientTask | None = None
        self._step = Gathered(settings, 0)

    def gather(self, task: ClientTask, size: int) -> list[str]:
        """Publish ``task``; the clients whose outcomes the step takes, once ``size``
        updates arrived on the clock (stale ones count as failures)."""
        self._train_pending()  # they pulled the previous version
        self._task, self._taken = task, set()
        self._start()
        step = self._step = Gathered(self.settings, task.round)
        idle = 0
        while step.good < size:
            if not self._events:
                idle += 1
                if idle > 24 * 7:  # a simulated week with nobody available
                    break
                self.clock_s += IDLE_S
                self._start()
                continue
            arrival, seq, device, tag = heapq.heappop(self._events)
            if seq not in self._results:
                self._train_pending()
            self.clock_s = max(self.clock_s, arrival)
            self._in_flight.discard(device)
            step.add(self._results.pop(seq), tag)
            self._taken.add(device)
            self._start()  # the device that delivered is replaced at once
        return list(step.outcomes)

    def pulled(self) -> dict[str, Tag]:
        """The ``(round, attempt)`` each gathered client's outcome answers."""
        return dict(self._step.pulled)

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """The gathered outcomes of ``cohort`` (the clients :meth:`gather` returned)."""
        return self._step.take(cohort)

    def round_metrics(self) -> dict[str, int]:
        """The last step's stale updates dropped, largest staleness taken, devices
        training, and the simulated clock in seconds."""
        return {**self._step.metrics(), "in_flight": len(self._in_flight),
                "clock_s": int(self.clock_s)}  # fmt: skip

    def close(self) -> None:
        """Close the executor that trains."""
        self.inner.close()

    name = "fedbuff_clock"

    def snapshot(self) -> bytes:
        """The clock and everything in flight (only ever read back by :meth:`restore`)."""
        keep = (self.clock_s, self._seq, self._events, self._pending, self._results,
                self._in_flight, self._taken, self._task, self.rng.bit_generator.state)  # fmt: skip
        return pickle.dumps(keep, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """Return to a snapshot (our own checkpoint file, written by :meth:`snapshot`)."""
        (self.clock_s, self._seq, self._events, self._pending, self._results,
         self._in_flight, self._taken, self._task, state) = pickle.loads(data)  # fmt: skip
        self.rng.bit_generator.state = state

    # -- the clock ------------------------------------------------------------------------
    def _start(self) -> None:
        """Devices available now start on the current task, up to the concurrency."""
        assert self._task is not None
        want = self.settings.concurrency - len(self._in_flight)
        if want <= 0:
            return
        exclude = self._in_flight | self._taken
        tag = (self._task.round, self._task.attempt)
        for device in self.profiles.sample_available(
            len(self.ids), want, self.clock_s, self.rng, exclude
        ):
            self._seq += 1
            arrival = self.clock_s + self.profiles.duration_s(device)
            heapq.heappush(self._events, (arrival, self._seq, device, tag))
            self._pending.append((self._seq, device))
            self._in_flight.add(device)

    def _train_pending(self) -> None:
        """Train the devices that pulled the current task (one call of the inner executor)."""
        if not self._pending or self._task is None:
            return
        seq_of = {self.ids[device]: seq for seq, device in self._pending}
        self._pending.clear()
        for outcome in self.inner.map_clients(self._task, list(seq_of)):
            self._results[seq_of[outcome.client_id]] = outcome
