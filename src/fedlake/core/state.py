"""The frozen server state and the pure server round."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from fedlake.core.aggregator import Aggregator
from fedlake.core.algorithm import Algorithm
from fedlake.core.params import frozen
from fedlake.core.update import CONTROL, DELTA, ClientUpdate, validate_update


@dataclass(frozen=True)
class ServerState:
    """Everything the server needs to run the next round (immutable).

    ``round`` counts completed rounds; ``params`` is read-only.
    ``privacy_ledger`` records every privacy mechanism applied so far; ``control`` is
    SCAFFOLD's server control variate (None for other algorithms).
    """

    round: int
    params: np.ndarray
    aggregator_state: Any
    server_state: Any
    seed: int
    privacy_ledger: tuple[Any, ...] = field(default=())
    control: np.ndarray | None = None

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
        control=frozen(np.zeros_like(p)) if algorithm.scaffold else None,
    )


def round_rng(seed: int, round_: int, *purpose: int) -> np.random.Generator:
    """A generator determined only by (seed, round, purpose...): resumable and order-free."""
    return np.random.default_rng([int(seed), int(round_), *map(int, purpose)])


SERVER_RNG = 7  # purpose tag of the server-side generator


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
    """A cohort's aggregate; ``control_mean``: SCAFFOLD's mean ``Delta c_i`` (else None).

    The control deltas are averaged with the same rule and weights as the deltas.
    """

    delta: np.ndarray
    aggregator_state: Any
    num_updates: int
    weight: float
    control_mean: np.ndarray | None = None


def aggregate_updates(
    algorithm: Algorithm, state: ServerState, updates: Iterable[ClientUpdate]
) -> Aggregated:
    """Aggregate a cohort: ``(delta, aggregator_state, num_updates, weight, control_mean)``.

    Linear aggregators consume ``updates`` as a stream in O(d) memory, so it may
    be a generator; non-linear ones materialise the cohort. Every update must be
    valid (see :func:`fedlake.core.update.validate_update`); an invalid one raises.

    Raises:
        TooFewUpdatesError: fewer updates than ``aggregator.min_updates`` (EmptyCohortError
            when there are none).
    """

    agg = algorithm.aggregator
    control = None  # SCAFFOLD: the control deltas, averaged with the deltas' own weights
    if algorithm.scaffold:
        if agg.fold is None:
            raise ValueError(f"SCAFFOLD needs a linear aggregator, got {agg.name}")
        control = agg.fold.start(state.dim)
        control.state = state.aggregator_state

    def checked() -> Iterator[ClientUpdate]:
        nonlocal control
        for u in updates:
            reason = validate_update(u, state.dim)
            if reason is None and control is not None and CONTROL not in u.vectors:
                reason = f"missing {CONTROL!r} vector (SCAFFOLD's control variate delta)"
            if reason is not None:
                raise ValueError(f"invalid update from client {u.client_id!r}: {reason}")
            if control is not None and agg.fold is not None:
                as_delta = replace(u, vectors={DELTA: u.vectors[CONTROL]})
                control = agg.fold.add(control, as_delta)  # in place: O(d) memory
            yield u

    count, weight = 0, 0.0
    if agg.linear and agg.fold is not None:
        acc = agg.fold.start(state.dim)
        acc.state = state.aggregator_state
        for u in checked():
            acc = agg.fold.add(acc, u)
            count, weight = count + 1, weight + float(u.weight)
        enough(agg, count)
        delta, agg_state = agg.fold.result(acc, state.aggregator_state)
    else:
        cohort = list(checked())
        count, weight = len(cohort), float(sum(u.weight for u in cohort))
        enough(agg, count)
        delta, agg_state = agg.aggregate(cohort, state.aggregator_state)
    control_mean = None
    if control is not None and agg.fold is not None and count:
        control_mean, _ = agg.fold.result(control, state.aggregator_state)
    return Aggregated(delta, agg_state, count, weight, control_mean)


def apply_server_step(
    algorithm: Algorithm,
    state: ServerState,
    delta: np.ndarray,
    aggregator_state: Any,
    *,
    control_mean: np.ndarray | None = None,
    participation: float | None = None,
) -> tuple[ServerState, dict[str, float]]:
    """Apply the server optimiser to an aggregated delta; returns the next state and metrics.

    SCAFFOLD: ``c += participation * control_mean``, with ``participation = |S| / N``
    (Karimireddy et al., ICML 2020, Algorithm 1: ``c += |S|/N * mean(Delta c_i)``).
    """
    rng = round_rng(state.seed, state.round, SERVER_RNG)
    step, server_state = algorithm.server.update(
        delta, state.server_state, params=state.params, rng=rng
    )
    control = state.control
    metrics = {
        "update_norm": float(np.linalg.norm(delta)),
        "step_norm": float(np.linalg.norm(step)),
    }
    if algorithm.scaffold:
        if control_mean is None or participation is None or not 0 < participation <= 1:
            raise ValueError(
                "SCAFFOLD's server step needs the mean control delta and a participation "
                f"|S|/N in (0, 1], got {participation}"
            )
        base = np.zeros(state.dim, np.float32) if control is None else control
        control = frozen((base + participation * control_mean).astype(np.float32))
        metrics["control_norm"] = float(np.linalg.norm(control))
    new_state = replace(
        state,
        round=state.round + 1,
        params=frozen(state.params + step),
        aggregator_state=aggregator_state,
        server_state=server_state,
        control=control,
    )
    return new_state, metrics


def server_round(
    algorithm: Algorithm,
    state: ServerState,
    updates: Iterable[ClientUpdate],
    *,
    population: int | None = None,
) -> tuple[ServerState, dict[str, float]]:
    """One pure server round: aggregate ``updates`` and step; returns the next state and metrics.

    The inputs are not modified; the unit of golden-number tests. ``population`` (SCAFFOLD
    only) is the number of clients; None means the cohort is everyone.
    """
    agg = aggregate_updates(algorithm, state, updates)
    new_state, metrics = apply_server_step(
        algorithm,
        state,
        agg.delta,
        agg.aggregator_state,
        control_mean=agg.control_mean,
        participation=1.0 if population is None else agg.num_updates / population,
    )
    metrics.update(num_updates=float(agg.num_updates), total_weight=agg.weight)
    return new_state, metrics
