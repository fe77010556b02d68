"""The simulated population: devices that drop out, straggle and run at different speeds.

:class:`Population` is the availability and heterogeneity model; :class:`PopulationExecutor`
wraps any executor with it: of a round's sampled cohort, the unavailable clients come
back as typed ``unavailable`` failures without running, and the others get the round's
step caps (stragglers, a deadline over fixed device speeds) as task instructions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlake.core.rng import client_key, round_rng
from fedlake.core.task import (
    ClientFailure,
    ClientOutcome,
    ClientTask,
    FailureReason,
    Instructions,
    SecureStage,
)
from fedlake.orchestration.folding import Folded, FoldPlan
from fedlake.orchestration.interfaces import Executor
from fedlake.simulation.chain import map_inner

__all__ = ["DROPOUT_RNG", "STRAGGLER_RNG", "Population", "PopulationExecutor"]

STRAGGLER_POLICIES = ("keep", "drop")
SPEED_RNG = 9  # purpose tag of the per-client device-speed generator
DROPOUT_RNG, STRAGGLER_RNG = 2, 8  # purpose tags of a round attempt's generators
UNAVAILABLE = "unavailable (simulated dropout)"


@dataclass(frozen=True)
class Population:
    """Availability and device heterogeneity of a simulated population.

    Args:
        dropout: chance that a sampled client is unavailable (returns nothing).
        stragglers: share of each round's available clients that straggle: they finish
            a uniformly random part of their work, 1..E-1 of E local epochs (FedProx's
            setup, Li et al. MLSys 2020), or a random part of their one epoch when E = 1.
        policy: ``"keep"`` uses stragglers' partial work, ``"drop"`` waits for nobody
            and discards any client that could not finish everything.
        deadline_s: the round's deadline in simulated seconds (None: none); a client
            finishes ``floor(deadline_s * speed_i)`` steps at most.
        speed: median device speed, in local steps per simulated second.
        speed_spread: standard deviation of log-speed across devices (each device's
            speed is fixed for the run, drawn from the seed and its id).
    """

    dropout: float = 0.0
    stragglers: float = 0.0
    policy: str = "keep"
    deadline_s: float | None = None
    speed: float = 100.0
    speed_spread: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.stragglers <= 1:
            raise ValueError(f"stragglers must be in [0, 1], got {self.stragglers}")
        if self.policy not in STRAGGLER_POLICIES:
            raise ValueError(
                f"straggler policy must be one of {STRAGGLER_POLICIES}, got {self.policy!r}"
            )
        if self.deadline_s is not None and not (
            math.isfinite(self.deadline_s) and self.deadline_s > 0
        ):
            raise ValueError(f"deadline_s must be > 0 seconds, got {self.deadline_s}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be > 0 steps per second, got {self.speed}")
        if not (math.isfinite(self.speed_spread) and self.speed_spread >= 0):
            raise ValueError(f"speed_spread must be >= 0, got {self.speed_spread}")

    @property
    def heterogeneous(self) -> bool:
        """Whether some clients may do less than their full local work."""
        return self.stragglers > 0 or self.deadline_s is not None

    def device_speed(self, client_id: str, seed: int) -> float:
        """The fixed speed (steps per simulated second) of ``client_id``'s device."""
        z = np.random.default_rng([int(seed), SPEED_RNG, client_key(client_id)]).standard_normal()
        return float(self.speed * math.exp(self.speed_spread * z))

    def workloads(
        self, clients: Sequence[str], *, epochs: int, seed: int, rng: np.random.Generator
    ) -> dict[str, Instructions]:
        """The round's partial workloads (clients not listed do all their work)."""
        if not self.heterogeneous or not clients:
            return {}
        drop = self.policy == "drop"
        out: dict[str, Instructions] = {}
        count = round(self.stragglers * len(clients))
        if count:
            chosen = rng.choice(len(clients), size=count, replace=False)
            for i in np.sort(chosen):
                if epochs > 1:
                    fraction = int(rng.integers(1, epochs)) / epochs
                else:
                    fraction = 1.0 - float(rng.random())  # in (0, 1]
                out[clients[int(i)]] = Instructions(fraction=fraction, drop_partial=drop)
        if self.deadline_s is not None:
            for c in clients:
                cap = math.floor(self.deadline_s * self.device_speed(c, seed))
                w = out.get(c, Instructions(drop_partial=drop))
                out[c] = Instructions(fraction=w.fraction, max_steps=cap, drop_partial=drop)
        return out

    def dropped(self, cohort: Sequence[str], rng: np.random.Generator) -> set[str]:
        """The clients of ``cohort`` that drop out this round."""
        if self.dropout == 0:
            return set()
        mask = rng.random(len(cohort)) < self.dropout
        return {c for c, m in zip(cohort, mask, strict=True) if m}


class PopulationExecutor:
    """``inner`` over a simulated population: dropouts fail, stragglers get step caps.

    Args:
        inner: runs the available clients.
        population: the availability and speed model.
        epochs: the local epochs (a straggler does 1..E-1 of them).
    """

    def __init__(self, inner: Executor, population: Population, *, epochs: int) -> None:
        self.inner = inner
        self.population = population
        self.epochs = epochs

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """The cohort's unavailable clients' failures, then the others' outcomes.

        Of a secure-aggregation attempt, only the training stage (``masked_input``) sees
        dropouts and stragglers: a dropped client shared its keys, then vanished, which
        the protocol recovers from.
        """
        if task.stage not in (None, SecureStage.MASKED_INPUT):
            yield from map_inner(self.inner, task, cohort, dict(variants or {}))
            return
        task, active, dropped = self._split(task, cohort)
        for cid in dropped:
            yield ClientFailure(cid, FailureReason.UNAVAILABLE, UNAVAILABLE)
        if not active:
            return
        own = {c: v for c, v in (variants or {}).items() if c not in dropped}
        yield from map_inner(self.inner, task, active, own)

    @property
    def folds(self) -> bool:
        """Whether the inner executor folds replies where the clients run."""
        return bool(getattr(self.inner, "folds", False))

    def fold_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        plan: FoldPlan,
        *,
        variants: Mapping[str, str] | None = None,
    ) -> list[Folded]:
        """The unavailable clients' records, then the inner executor's partial folds."""
        task, active, dropped = self._split(task, cohort)
        failures = [ClientFailure(c, FailureReason.UNAVAILABLE, UNAVAILABLE) for c in dropped]
        parts = [Folded.of_failures(failures)]
        if active:
            own = {c: v for c, v in (variants or {}).items() if c not in dropped}
            inner: Any = self.inner
            parts.extend(inner.fold_clients(task, active, plan, variants=own or None))
        return parts

    def _split(
        self, task: ClientTask, cohort: Sequence[str]
    ) -> tuple[ClientTask, list[str], list[str]]:
        """The task with the round's step caps, the available clients and the dropped ones."""
        seed, r, attempt = task.seed, task.round, task.attempt
        dropped = self.population.dropped(cohort, round_rng(seed, r, DROPOUT_RNG, attempt))
        active = [c for c in cohort if c not in dropped]
        work = self.population.workloads(
            active, epochs=self.epochs, seed=seed, rng=round_rng(seed, r, STRAGGLER_RNG, attempt)
        )
        return (
            (task.with_instructions(work) if work else task),
            active,
            [c for c in cohort if c in dropped],
        )

    def round_metrics(self) -> dict[str, int]:
        """What the inner executor reports of its last round."""
        report = getattr(self.inner, "round_metrics", None)
        return report() if report is not None else {}

    def close(self) -> None:
        """Release the inner executor."""
        self.inner.close()
