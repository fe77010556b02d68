"""FedBuff on the simulated clock: steps every K arrivals, staleness weights and limits,
devices that fail, and the synchronous baseline on the same clock."""

from __future__ import annotations

import numpy as np
import pytest

from fedlake.backends.inline import InlineExecutor
from fedlake.client.stores import MemoryStateStore
from fedlake.simulation.devices import DeviceProfiles
from fedlake.simulation.fedbuff import FedBuffConfig, run_fedbuff, run_sync, staleness_weight
from fedlake.testing.conformance import BROKEN, toy_fleet

PROFILES = DeviceProfiles(seed=1, night_availability=1.0, day_availability=1.0)


def _setup():
    fleet = toy_fleet(clients=12)
    ids = list(fleet.data.client_ids())
    params = fleet.trainer.init_params(0)
    steps: list[np.ndarray] = []

    def evaluate(p: np.ndarray) -> float:
        steps.append(p.copy())
        return float(len(steps))  # "accuracy" grows with every step: targets are testable

    return fleet, ids, params, evaluate, steps


def test_staleness_rules() -> None:
    assert staleness_weight("sqrt", 0) == 1.0 and staleness_weight("sqrt", 3) == 0.5
    assert staleness_weight("none", 9) == 1.0 and staleness_weight("poly:1", 1) == 0.5
    with pytest.raises(ValueError, match="unknown staleness rule"):
        staleness_weight("poly:-1", 1)
    with pytest.raises(ValueError, match="buffer"):
        FedBuffConfig(concurrency=4, buffer=5)


def test_a_step_every_k_arrivals_and_failures_counted() -> None:
    fleet, ids, params, evaluate, _ = _setup()
    executor = InlineExecutor(fleet, MemoryStateStore(), chunk=1)
    history = run_fedbuff(
        fleet=fleet, executor=executor, ids=ids, profiles=PROFILES,
        config=FedBuffConfig(concurrency=6, buffer=3), params=params,
        evaluate=evaluate, max_steps=5,
    )  # fmt: skip
    assert [p.version for p in history] == list(range(6))
    times = [p.time_s for p in history]
    assert times == sorted(times) and times[-1] > 0
    last = history[-1]
    # every step took 3 valid arrivals; the broken client's arrivals are failures
    assert last.arrivals == 3 * 5 + last.failed + last.stale
    assert BROKEN in ids


def test_updates_staler_than_the_limit_are_dropped() -> None:
    fleet, ids, params, evaluate, _ = _setup()
    executor = InlineExecutor(fleet, MemoryStateStore(), chunk=1)
    history = run_fedbuff(
        fleet=fleet, executor=executor, ids=ids, profiles=PROFILES,
        config=FedBuffConfig(concurrency=8, buffer=2, max_staleness=0), params=params,
        evaluate=evaluate, max_steps=6,
    )  # fmt: skip
    assert history[-1].stale > 0  # with 8 in flight and a step every 2, some fall behind


def test_the_same_seed_gives_the_same_run() -> None:
    runs = []
    for _ in range(2):
        fleet, ids, params, evaluate, steps = _setup()
        run_fedbuff(
            fleet=fleet, executor=InlineExecutor(fleet, MemoryStateStore(), chunk=1),
            ids=ids, profiles=PROFILES, config=FedBuffConfig(concurrency=5, buffer=2),
            params=params, evaluate=evaluate, max_steps=4, seed=3,
        )  # fmt: skip
        runs.append(steps[-1])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_sync_rounds_last_until_the_slowest_device() -> None:
    fleet, ids, params, evaluate, _ = _setup()
    executor = InlineExecutor(fleet, MemoryStateStore(), chunk=1)
    history = run_sync(
        fleet=fleet, executor=executor, ids=ids, profiles=PROFILES, cohort=4,
        params=params, evaluate=evaluate, max_rounds=3,
    )  # fmt: skip
    assert [p.version for p in history] == [0, 1, 2, 3]
    gaps = np.diff([p.time_s for p in history])
    assert (gaps > 0).all()
    slowest = max(PROFILES.duration_s(i) for i in range(len(ids)))
    assert gaps.max() <= slowest * (1 + 1e-12)  # the clock adds the rounds up


def test_target_stops_the_run() -> None:
    fleet, ids, params, evaluate, _ = _setup()
    executor = InlineExecutor(fleet, MemoryStateStore(), chunk=1)
    history = run_fedbuff(
        fleet=fleet, executor=executor, ids=ids, profiles=PROFILES,
        config=FedBuffConfig(concurrency=4, buffer=2), params=params,
        evaluate=evaluate, target=3.0,
    )  # fmt: skip
    assert history[-1].accuracy == 3.0 and len(history) == 3


def test_over_selection_closes_the_round_at_the_cohorts_last_arrival() -> None:
    fleet, ids, params, evaluate, _ = _setup()
    executor = InlineExecutor(fleet, MemoryStateStore(), chunk=1)
    plain = run_sync(
        fleet=fleet, executor=executor, ids=ids, profiles=PROFILES, cohort=4,
        params=params, evaluate=evaluate, max_rounds=1, seed=5,
    )  # fmt: skip
    over = run_sync(
        fleet=fleet, executor=executor, ids=ids, profiles=PROFILES, cohort=4,
        params=params, evaluate=evaluate, max_rounds=1, seed=5, over_select=0.5,
    )  # fmt: skip
    assert over[-1].time_s <= plain[-1].time_s  # 6 asked, the first 4 to deliver kept
    assert over[-1].arrivals + over[-1].failed == 4
