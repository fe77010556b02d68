"""Linear aggregation pushed down into the executor: screen and fold where clients run.

An executor that can (:class:`~fedlake.orchestration.interfaces.FoldingExecutor`) screens
its clients' replies where they arrive and folds the valid ones with the aggregator's
``Fold``; only partial sums (O(d) each, whatever the cohort) and the clients' records go
back, and partial folds combine with ``Fold.merge`` (worker processes now; Spark
partitions and tree aggregation next). The server finishes with ``Fold.result``.
Floating-point sums then add in another order than one stream in cohort order, so the
model matches the streaming round to float tolerance, not bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedlake.compression.messages import decode_reply
from fedlake.core.aggregator import FoldAccumulator
from fedlake.core.algorithm import Algorithm
from fedlake.core.task import ClientFailure, ClientOutcome
from fedlake.core.update import DELTA, ClientUpdate
from fedlake.orchestration.records import ClientRecord
from fedlake.orchestration.screening import failure_record, screen

__all__ = ["FoldPlan", "Folded", "fold_outcomes", "merge_folded"]


@dataclass(frozen=True)
class FoldPlan:
    """What a folding executor needs from the server for one attempt (picklable).

    Args:
        dim: the model's length.
        sent: the positions uploads carry (None: all).
        aggregator_state: the round's aggregator state (an adaptive clip norm).
    """

    dim: int
    sent: np.ndarray | None
    aggregator_state: Any = None


@dataclass
class Folded:
    """A partial fold: per vector name an accumulator, and the clients' records."""

    accumulators: dict[str, FoldAccumulator]
    records: list[ClientRecord] = field(default_factory=list)
    count: int = 0  # updates folded
    weight: float = 0.0  # their total weight
    failures: list[ClientFailure] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # accepted partial work (stragglers)
    facts: dict[str, dict[str, float]] = field(default_factory=dict)  # DP-SGD facts

    @classmethod
    def of_failures(cls, failures: Sequence[ClientFailure]) -> Folded:
        """The partial fold of clients that all sent nothing: their records, no sums."""
        return cls({}, records=[failure_record(f) for f in failures], failures=list(failures))


def _start(algorithm: Algorithm, plan: FoldPlan) -> dict[str, FoldAccumulator]:
    fold = algorithm.aggregator.fold
    if fold is None or fold.merge is None:
        raise ValueError(
            f"aggregator {algorithm.aggregator.name} cannot fold in the executor: it is not "
            "linear, or cannot merge partial folds"
        )
    accs = {}
    for name in (DELTA, *algorithm.vectors):
        accs[name] = fold.start(plan.dim)
        accs[name].state = plan.aggregator_state
    return accs


def fold_outcomes(
    outcomes: Iterable[ClientOutcome], plan: FoldPlan, algorithm: Algorithm
) -> Folded:
    """Screen ``outcomes`` and fold the valid updates, every named vector like the delta."""
    fold = algorithm.aggregator.fold
    accs = _start(algorithm, plan)
    assert fold is not None
    out = Folded(accs)
    decode = functools.partial(
        decode_reply, dim=plan.dim, mask=plan.sent, codec=algorithm.compression.upload
    )
    valid = screen(
        outcomes, plan.dim, out.records, decode, required=algorithm.vectors, failures=out.failures
    )
    for u in valid:
        out.facts[u.client_id] = {k: float(v) for k, v in u.metrics.items() if k.startswith("dp_")}
        if "work_fraction" in u.metrics:
            out.partial.append(u.client_id)
        out.count, out.weight = out.count + 1, out.weight + float(u.weight)
        for name in accs:
            one = u if name == DELTA else _as_delta(u, name)
            accs[name] = fold.add(accs[name], one)
    return out


def _as_delta(u: ClientUpdate, name: str) -> ClientUpdate:
    return replace(u, vectors={DELTA: u.vectors[name]})


def merge_folded(
    parts: Sequence[Folded], algorithm: Algorithm, plan: FoldPlan, cohort: Sequence[str]
) -> Folded:
    """Combine partial folds (in the given order) into one; records back in cohort order."""
    fold = algorithm.aggregator.fold
    assert fold is not None and fold.merge is not None
    total = Folded(_start(algorithm, plan))
    for part in parts:
        for name, acc in part.accumulators.items():
            total.accumulators[name] = fold.merge(total.accumulators[name], acc)
        total.records.extend(part.records)
        total.count, total.weight = total.count + part.count, total.weight + part.weight
        total.failures.extend(part.failures)
        total.facts.update(part.facts)
    position = {cid: i for i, cid in enumerate(cohort)}
    total.records.sort(key=lambda rec: position[rec.client_id])
    accepted = {rec.client_id for rec in total.records if rec.status == "accepted"}
    total.partial = sorted(
        (c for part in parts for c in part.partial if c in accepted), key=position.__getitem__
    )
    return total
