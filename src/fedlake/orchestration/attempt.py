"""One attempt of a round: make the task, collect the replies through screening, aggregate.

The server's side of a round, as data flows: the task carries the encoded model and the
server plugins' extras; the executor answers with replies or typed failures, in any order;
they are screened (decoded, validated, recorded) as they arrive and streamed into the
aggregator in cohort order. Stepping the server state with the aggregate is the pure
:func:`fedlake.core.state.apply_server_step`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fedlake.compression.messages import decode_reply
from fedlake.core.algorithm import Algorithm
from fedlake.core.state import (
    Aggregated,
    ServerState,
    TooFewUpdatesError,
    aggregate_updates,
    finish_folds,
)
from fedlake.core.task import ClientFailure, ClientTask, Tag
from fedlake.core.update import DELTA, ClientUpdate
from fedlake.orchestration.events import RunObserver
from fedlake.orchestration.folding import FoldPlan, merge_folded
from fedlake.orchestration.interfaces import Executor, FoldingExecutor, RoundReporter
from fedlake.orchestration.privacy import dp_facts
from fedlake.orchestration.records import ClientRecord, ClientStatus
from fedlake.orchestration.screening import screen_in_cohort_order
from fedlake.orchestration.transport import Download

__all__ = ["AttemptResult", "make_task", "run_attempt"]


@dataclass
class AttemptResult:
    """What one attempt produced: every client's record and, when enough, the aggregate."""

    cohort: list[str]
    records: list[ClientRecord]
    aggregated: Aggregated | None
    count: int  # valid updates
    partial: list[str] = field(default_factory=list)  # accepted partial work (stragglers)
    failures: list[ClientFailure] = field(default_factory=list)
    executor_metrics: dict[str, int] = field(default_factory=dict)

    def accepted(self) -> list[str]:
        """The clients whose update the attempt accepted."""
        return [rec.client_id for rec in self.records if rec.status is ClientStatus.ACCEPTED]


def make_task(
    *,
    round_: int,
    attempt: int,
    seed: int,
    download: Download,
    extras: Mapping[str, bytes],
    cohort: Sequence[str],
    acks: Mapping[str, Tag],
) -> ClientTask:
    """The attempt's task: the encoded model, the plugins' extras, the cohort's acks."""
    return ClientTask(
        round=round_,
        attempt=attempt,
        seed=seed,
        model=download.payload,
        extras=dict(extras),
        acks={c: acks[c] for c in cohort if c in acks},
    )


def run_attempt(
    *,
    algorithm: Algorithm,
    executor: Executor,
    state: ServerState,
    task: ClientTask,
    cohort: list[str],
    sent: np.ndarray | None,
    observer: RunObserver,
    facts: dict[str, dict[str, float]],
    scales: Mapping[str, float] | None = None,
) -> AttemptResult:
    """Send ``task`` to ``cohort``, screen what comes back and aggregate the valid updates.

    ``sent`` marks the positions uploads carry; ``facts`` collects each update's DP-SGD
    facts; ``scales`` multiplies some clients' deltas (FedBuff's staleness weights). Too
    few valid updates for the rule leaves ``aggregated`` None.
    """
    records: list[ClientRecord] = []
    result = AttemptResult(cohort, records, None, 0)
    done = [0]

    def tick() -> None:
        done[0] += 1
        observer.client_finished(round=task.round + 1, done=done[0], total=len(cohort))

    if isinstance(executor, FoldingExecutor) and executor.folds:
        return _folded_attempt(algorithm, executor, state, task, sent, result, tick, facts)

    decode = functools.partial(
        decode_reply, dim=state.dim, mask=sent, codec=algorithm.compression.upload
    )
    outcomes = executor.map_clients(task, cohort)
    accepted = _partial_work(
        _scaled(
            dp_facts(
                screen_in_cohort_order(
                    outcomes,
                    cohort,
                    state.dim,
                    records,
                    decode,
                    on_result=tick,
                    required=algorithm.vectors,
                    failures=result.failures,
                ),
                facts,
            ),
            scales or {},
        ),
        result.partial,
    )
    try:
        result.aggregated = aggregate_updates(algorithm, state, accepted, screened=True)
        result.count = result.aggregated.num_updates
    except TooFewUpdatesError:  # none, or fewer than the rule needs
        result.count = sum(rec.status is ClientStatus.ACCEPTED for rec in records)
    if isinstance(executor, RoundReporter):
        result.executor_metrics = executor.round_metrics()
    return result


def _folded_attempt(
    algorithm: Algorithm,
    executor: FoldingExecutor,
    state: ServerState,
    task: ClientTask,
    sent: np.ndarray | None,
    result: AttemptResult,
    tick: Callable[[], None],
    facts: dict[str, dict[str, float]],
) -> AttemptResult:
    """The attempt with the executor screening and folding replies where clients run."""
    plan = FoldPlan(state.dim, sent, state.aggregator_state)
    parts = executor.fold_clients(task, result.cohort, plan)
    total = merge_folded(parts, algorithm, plan, result.cohort)
    for _ in total.records:
        tick()
    result.records.extend(total.records)
    result.failures.extend(total.failures)
    result.partial.extend(total.partial)
    facts.update(total.facts)
    result.count = total.count
    with contextlib.suppress(TooFewUpdatesError):  # too few: no aggregate, maybe a retry
        result.aggregated = finish_folds(
            algorithm, state, total.accumulators, total.count, total.weight
        )
    if isinstance(executor, RoundReporter):
        result.executor_metrics = executor.round_metrics()
    return result


def _scaled(updates: Iterable[ClientUpdate], scales: Mapping[str, float]) -> Iterator[ClientUpdate]:
    """``updates`` with the deltas of ``scales``' clients multiplied by their scale."""
    for u in updates:
        w = scales.get(u.client_id, 1.0)
        if w != 1.0:
            delta = np.multiply(u.vectors[DELTA], np.float32(w), dtype=np.float32)
            u = replace(u, vectors={**u.vectors, DELTA: delta})
        yield u


def _partial_work(updates: Iterable[ClientUpdate], into: list[str]) -> Iterator[ClientUpdate]:
    """Pass ``updates`` through, noting the clients that sent partial work (stragglers kept)."""
    for u in updates:
        if "work_fraction" in u.metrics:
            into.append(u.client_id)
        yield u
