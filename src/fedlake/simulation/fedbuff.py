"""Asynchronous buffered aggregation (FedBuff) and synchronous FedAvg on one simulated clock.

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022): ``concurrency`` devices train at once, each on the model version it
pulled; the server keeps a buffer and, every ``buffer`` arrivals, takes one step with
the mean of the buffered deltas, each weighted by its staleness ``tau`` (versions
behind): ``1/sqrt(1 + tau)`` by default. Updates staler than ``max_staleness`` are
dropped. A device that delivers is replaced at once by another available one.

:func:`run_fedbuff` runs the paper's step on ``fedlake run``'s clock
(:class:`~fedlake.simulation.buffered.ClockExecutor`, driven by
:class:`~fedlake.simulation.devices.DeviceProfiles`: a device's update arrives its
heavy-tailed duration after it pulled the model); training runs through any executor.

:func:`run_sync` is synchronous FedAvg on the same clock and devices: each round samples
``cohort`` available devices and lasts until the slowest one delivers (or a deadline,
past which late devices are dropped), the baseline FedBuff is measured against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedlake.client.fleet import ClientFleet
from fedlake.compression.messages import decode_reply, encode_model
from fedlake.core.staleness import staleness_weight
from fedlake.core.task import ClientFailure, ClientReply, ClientTask
from fedlake.orchestration.buffered import FedBuffSettings
from fedlake.orchestration.interfaces import Executor
from fedlake.simulation.buffered import ClockExecutor
from fedlake.simulation.devices import DeviceProfiles

__all__ = ["ClockPoint", "FedBuffConfig", "run_fedbuff", "run_sync", "staleness_weight"]

Evaluate = Callable[[np.ndarray], float]  # params -> accuracy on held-out data


@dataclass(frozen=True)
class FedBuffConfig:
    """FedBuff's knobs (the paper's names: concurrency, K, max staleness, eta_g)."""

    concurrency: int = 100
    buffer: int = 10
    max_staleness: int | None = None
    staleness: str = "sqrt"  # "sqrt": 1/sqrt(1+tau); "none": 1; "poly:a": (1+tau)^-a
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        self.settings()  # a bad knob fails here, not mid-run
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr}")

    def settings(self) -> FedBuffSettings:
        """The orchestration's settings of these knobs (all but the server's step size)."""
        return FedBuffSettings(self.concurrency, self.buffer, self.max_staleness, self.staleness)


@dataclass
class ClockPoint:
    """The global model after a server step: when, which version, how good."""

    time_s: float
    version: int
    accuracy: float
    arrivals: int = 0
    stale: int = 0  # updates dropped for staleness so far
    failed: int = 0  # devices that delivered nothing so far


@dataclass
class _Trainer:
    """Trains batches of devices on one model version through an executor."""

    fleet: ClientFleet
    executor: Executor
    ids: Sequence[str]
    seed: int
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.dim = self.fleet.trainer.spec.size

    def train(
        self, version: int, params: np.ndarray, devices: Sequence[int]
    ) -> dict[int, tuple[np.ndarray, float] | None]:
        """Each device's ``(delta, examples)`` on ``params``, or None when it failed."""
        model = encode_model(params, None, None, np.random.default_rng(version))
        task = ClientTask(round=version, attempt=0, seed=self.seed, model=model)
        index = {self.ids[i]: i for i in devices}
        codec = self.fleet.algorithm.compression.upload
        out: dict[int, tuple[np.ndarray, float] | None] = dict.fromkeys(devices)
        for outcome in self.executor.map_clients(task, list(index)):
            if isinstance(outcome, ClientReply):
                u = decode_reply(outcome, dim=self.dim, mask=None, codec=codec)
                out[index[outcome.client_id]] = (np.asarray(u.delta, np.float64), u.weight)
        return out


def run_fedbuff(
    *,
    fleet: ClientFleet,
    executor: Executor,
    ids: Sequence[str],
    profiles: DeviceProfiles,
    config: FedBuffConfig,
    params: np.ndarray,
    evaluate: Evaluate,
    seed: int = 0,
    max_time_s: float = 7 * 86400.0,
    max_steps: int = 10_000,
    target: float | None = None,
) -> list[ClockPoint]:
    """FedBuff on the simulated clock until ``target`` accuracy, a step or time limit.

    The clock and the devices are ``fedlake run``'s (:class:`ClockExecutor`); the step is
    the paper's: the mean of the K staleness-weighted deltas, times ``server_lr``.
    """
    settings = config.settings()
    clock = ClockExecutor(executor, ids, profiles, settings, seed)
    dim, codec = fleet.trainer.spec.size, fleet.algorithm.compression.upload
    params = np.array(params, dtype=np.float32)
    history = [ClockPoint(0.0, 0, evaluate(params))]
    arrivals = stale = failed = 0
    for version in range(max_steps):
        model = encode_model(params, None, None, np.random.default_rng(version))
        task = ClientTask(round=version, attempt=0, seed=seed, model=model)
        cohort = clock.gather(task, config.buffer)
        pulled = clock.pulled()
        buffer: list[np.ndarray] = []
        for outcome in clock.map_clients(task, cohort):
            arrivals += 1
            if isinstance(outcome, ClientReply):
                u = decode_reply(outcome, dim=dim, mask=None, codec=codec)
                tau = version - pulled[outcome.client_id][0]
                buffer.append(settings.weight(tau) * np.asarray(u.delta, np.float64))
            elif isinstance(outcome, ClientFailure) and outcome.message.startswith("stale:"):
                stale += 1
            else:
                failed += 1
        if len(buffer) < config.buffer or clock.clock_s > max_time_s:
            break  # nobody left to arrive, or out of time
        params = (params + config.server_lr * (sum(buffer) / len(buffer))).astype(np.float32)
        history.append(ClockPoint(clock.clock_s, version + 1, evaluate(params), arrivals,
                                  stale, failed))  # fmt: skip
        if target is not None and history[-1].accuracy >= target:
            break
    return history


def run_sync(
    *,
    fleet: ClientFleet,
    executor: Executor,
    ids: Sequence[str],
    profiles: DeviceProfiles,
    cohort: int,
    params: np.ndarray,
    evaluate: Evaluate,
    seed: int = 0,
    deadline_s: float | None = None,
    over_select: float = 0.0,
    server_lr: float = 1.0,
    max_time_s: float = 7 * 86400.0,
    max_rounds: int = 10_000,
    target: float | None = None,
) -> list[ClockPoint]:
    """Synchronous FedAvg on the same clock: a round lasts until its slowest device (or
    ``deadline_s``, dropping the later ones) delivers. ``over_select`` samples that much
    more (0.3: 130% of ``cohort``, as production systems do; Bonawitz et al., MLSys 2019)
    and closes the round when ``cohort`` devices have delivered."""
    trainer = _Trainer(fleet, executor, ids, seed)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(41,)))
    params = np.array(params, dtype=np.float32)
    t, arrivals, failed = 0.0, 0, 0
    history = [ClockPoint(0.0, 0, evaluate(params))]
    for r in range(max_rounds):
        asked = math.ceil(cohort * (1.0 + over_select))
        devices = profiles.sample_available(len(ids), asked, t, rng, set())
        if not devices:
            t += 3600.0  # nobody awake: try again in an hour
            continue
        durations = {i: profiles.duration_s(i) for i in devices}
        devices = sorted(devices, key=durations.__getitem__)[:cohort]  # the first to deliver
        if deadline_s is not None:
            devices = [i for i in devices if durations[i] <= deadline_s]
        length = deadline_s if deadline_s is not None else max(durations[i] for i in devices)
        trained = trainer.train(r, params, devices) if devices else {}
        got = [v for v in trained.values() if v is not None]
        arrivals += len(got)
        failed += len(trained) - len(got)
        t += length
        if t > max_time_s:
            break
        if got:
            weights = np.array([w for _, w in got], dtype=np.float64)
            step = sum(w * d for w, (d, _) in zip(weights, got, strict=True)) / weights.sum()
            params = (params + server_lr * step).astype(np.float32)
        history.append(ClockPoint(t, r + 1, evaluate(params), arrivals, 0, failed))
        if target is not None and history[-1].accuracy >= target:
            break
    return history
