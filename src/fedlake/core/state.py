"""The frozen server state and the pure server round."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from fedlake.core.aggregator import Aggregator, FoldAccumulator
from fedlake.core.algorithm import Algorithm
from fedlake.core.params import frozen, frozen_fresh
from fedlake.core.recycle import MODELS
from fedlake.core.rng import SERVER_RNG, round_rng
from fedlake.core.update import DELTA, ClientUpdate, validate_update


@dataclass(frozen=True)
class ServerState:
    """Everything the server needs to run the next round (immutable).

    ``round`` counts completed rounds; ``params`` is read-only.
    ``privacy_ledger`` records every privacy mechanism applied so far; ``plugins`` holds
    each server plugin's state by name (SCAFFOLD's control variate).
    """

    round: int
    params: np.ndarray
    aggregator_state: Any
    server_state: Any
    seed: int
    privacy_ledger: tuple[Any, ...] = field(default=())
    plugins: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Length of the flat parameter vector."""
        return int(self.params.shape[0])


def init_server_state(algorithm: Algorithm, params: np.ndarray, *, seed: int) -> ServerState:
    """Round-0 state for ``algorithm`` starting from ``params``."""
    p = frozen(params)
    return ServerState(
        round=0,
        params=p,
        aggregator_state=algorithm.aggregator.init(p.shape[0]),
        server_state=algorithm.server.init(p),
        seed=int(seed),
        plugins={plugin.name: plugin.init(p) for plugin in algorithm.server_plugins},
    )


def task_extras(algorithm: Algorithm, state: ServerState) -> dict[str, bytes]:
    """The encoded vectors the server plugins ship with the model this round."""
    extras: dict[str, bytes] = {}
    for plugin in algorithm.server_plugins:
        if plugin.extras is not None:
            extras.update(plugin.extras(state.plugins[plugin.name]))
    return extras


class TooFewUpdatesError(ValueError):
    """Raised when a round has fewer valid updates than its aggregation rule needs."""


class EmptyCohortError(TooFewUpdatesError):
    """Raised when a round has no update to aggregate."""


def enough(aggregator: Aggregator, count: int) -> None:
    """Raise unless ``count`` updates are enough for ``aggregator``."""
    if count == 0 and aggregator.min_updates > 0:  # 0: rules defined on no update (DP noise)
        raise EmptyCohortError("cannot aggregate an empty cohort")
    if count < aggregator.min_updates:
        raise TooFewUpdatesError(
            f"{aggregator.name} needs at least {aggregator.min_updates} updates, got {count}"
        )


class Aggregated(NamedTuple):
    """A cohort's aggregate: ``vectors`` maps ``delta`` (and every vector the server plugins
    ask for, averaged with the same rule and weights) to its aggregate."""

    vectors: Mapping[str, np.ndarray]
    aggregator_state: Any
    num_updates: int
    weight: float

    @property
    def delta(self) -> np.ndarray:
        """The aggregated delta."""
        return self.vectors[DELTA]


def aggregate_updates(
    algorithm: Algorithm,
    state: ServerState,
    updates: Iterable[ClientUpdate],
    *,
    screened: bool = False,
) -> Aggregated:
    """Aggregate a cohort: ``(vectors, aggregator_state, num_updates, weight)``.

    Linear aggregators consume ``updates`` as a stream in O(d) memory per named vector,
    so it may be a generator; non-linear ones materialise the cohort. Every update must be
    valid (see :func:`fedlake.core.update.validate_update`) and carry every vector the
    algorithm's server plugins ask for; an invalid one raises (``screened``: the caller
    validated them, and only the vectors are checked for).

    Raises:
        TooFewUpdatesError: fewer updates than ``aggregator.min_updates`` (EmptyCohortError
            when there are none).
    """
    agg = algorithm.aggregator
    extra = algorithm.vectors
    if extra and agg.fold is None:
        raise ValueError(f"{', '.join(extra)} need a linear aggregator, got {agg.name}")
    folds: dict[str, FoldAccumulator] = {}  # the extra vectors, folded like the delta
    if agg.fold is not None:
        for name in extra:
            folds[name] = agg.fold.start(state.dim)
            folds[name].state = state.aggregator_state

    def checked() -> Iterator[ClientUpdate]:
        for u in updates:
            # ``screened``: the caller validated every update already (one pass less
            # over each vector: 100 MB updates cost ~10 ms a pass)
            reason = None if screened else validate_update(u, state.dim)
            missing = [name for name in extra if name not in u.vectors]
            if reason is None and missing:
                reason = f"missing {missing[0]!r} vector"
            if reason is not None:
                raise ValueError(f"invalid update from client {u.client_id!r}: {reason}")
            if agg.fold is not None:
                for name, acc in folds.items():  # in place: O(d) memory
                    folds[name] = agg.fold.add(acc, replace(u, vectors={DELTA: u.vectors[name]}))
            yield u

    if agg.linear and agg.fold is not None:
        acc = agg.fold.start(state.dim)
        acc.state = state.aggregator_state
        count, weight = 0, 0.0
        for u in checked():
            acc = agg.fold.add(acc, u)
            count, weight = count + 1, weight + float(u.weight)
        return finish_folds(algorithm, state, {DELTA: acc, **folds}, count, weight)
    cohort = list(checked())
    count, weight = len(cohort), float(sum(u.weight for u in cohort))
    enough(agg, count)
    delta, agg_state = agg.aggregate(cohort, state.aggregator_state)
    return Aggregated({DELTA: delta}, agg_state, count, weight)


def finish_folds(
    algorithm: Algorithm,
    state: ServerState,
    accumulators: Mapping[str, FoldAccumulator],
    count: int,
    weight: float,
) -> Aggregated:
    """The aggregate of folded accumulators (``delta`` and the plugins' vectors).

    Raises:
        TooFewUpdatesError: ``count`` is fewer than the rule needs.
    """
    agg = algorithm.aggregator
    assert agg.fold is not None
    enough(agg, count)
    delta, agg_state = agg.fold.result(accumulators[DELTA], state.aggregator_state)
    vectors = {DELTA: delta}
    if count:
        for name, acc in accumulators.items():
            if name != DELTA:
                vectors[name], _ = agg.fold.result(acc, state.aggregator_state)
    return Aggregated(vectors, agg_state, count, weight)


def apply_server_step(
    algorithm: Algorithm,
    state: ServerState,
    aggregated: Mapping[str, np.ndarray],
    aggregator_state: Any,
    *,
    participation: float | None = None,
) -> tuple[ServerState, dict[str, float]]:
    """Apply the server optimiser to the aggregated delta, then step each server plugin.

    ``participation`` is the cohort's share of the population, ``|S| / N`` (SCAFFOLD
    moves its ``c`` by it); returns the next state and metrics.
    """
    delta = aggregated[DELTA]
    rng = round_rng(state.seed, state.round, SERVER_RNG)
    step, server_state = algorithm.server.update(
        delta, state.server_state, params=state.params, rng=rng
    )
    update_norm = float(np.linalg.norm(delta))
    metrics = {
        "update_norm": update_norm,
        "step_norm": update_norm if step is delta else float(np.linalg.norm(step)),
    }
    plugins = dict(state.plugins)
    for plugin in algorithm.server_plugins:
        if plugin.step is not None:
            plugins[plugin.name], more = plugin.step(
                plugins[plugin.name], aggregated, -1.0 if participation is None else participation
            )
            metrics.update(more)
    new_state = replace(
        state,
        round=state.round + 1,
        params=_stepped(state.params, step),
        aggregator_state=aggregator_state,
        server_state=server_state,
        plugins=plugins,
    )
    return new_state, metrics


def _stepped(params: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``params + step``, read-only; written into an earlier round's array when both are
    float32 vectors of one shape (a new 100 MB array costs its page faults every round)."""
    if (
        isinstance(step, np.ndarray)
        and params.dtype == step.dtype == np.float32
        and params.shape == step.shape
    ):
        out = MODELS.empty(params.size, np.float32).reshape(params.shape)
        return MODELS.freeze(np.add(params, step, out=out))
    return frozen_fresh(params + step)


def server_round(
    algorithm: Algorithm,
    state: ServerState,
    updates: Iterable[ClientUpdate],
    *,
    population: int | None = None,
) -> tuple[ServerState, dict[str, float]]:
    """One pure server round: aggregate ``updates`` and step; returns the next state and metrics.

    The inputs are not modified; the unit of golden-number tests. ``population`` is the
    number of clients (SCAFFOLD's ``N``); None means the cohort is everyone.
    """
    agg = aggregate_updates(algorithm, state, updates)
    new_state, metrics = apply_server_step(
        algorithm,
        state,
        agg.vectors,
        agg.aggregator_state,
        participation=1.0 if population is None else agg.num_updates / population,
    )
    metrics.update(num_updates=float(agg.num_updates), total_weight=agg.weight)
    return new_state, metrics
