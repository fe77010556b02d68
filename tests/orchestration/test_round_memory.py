"""A round's aggregation memory is known before the first round; a cohort that cannot
fit is refused with the number, and linear rules stream whatever the cohort."""

from __future__ import annotations

import dataclasses
import functools

import pytest
from toy import ToyTrainer, toy_data

from fedlake.aggregators.krum import krum
from fedlake.aggregators.mean import weighted_mean
from fedlake.aggregators.median import median
from fedlake.algorithms.fedavg import fedavg
from fedlake.orchestration import federation as fed_module
from fedlake.orchestration.memory import round_memory
from fedlake.orchestration.sampling import CohortSpec
from fedlake.simulation import simulate


def test_linear_rules_stream_whatever_the_cohort() -> None:
    small = round_memory(weighted_mean(), 100, 1_000_000)
    large = round_memory(weighted_mean(), 10_000, 1_000_000)
    assert small.streams and small.bytes == large.bytes == 5 * 4_000_000


def test_non_linear_rules_hold_the_cohort_and_krum_its_distances() -> None:
    d = 1_000_000
    med = round_memory(median(), 1000, d)
    assert not med.streams and med.bytes >= 1000 * 4 * d
    k = round_memory(krum(f=1), 1000, d)
    assert k.bytes - med.bytes == 8 * 1000 * 1000
    assert "1000x1000 distances" in k.describe()


def _recipe(aggregator):
    return dataclasses.replace(fedavg(client_lr=0.5), aggregator=aggregator)


def _federation(tmp_path, aggregator):
    data = toy_data({f"c{i}": ((float(i), 1.0), i + 1) for i in range(6)})
    return simulate(
        recipe=functools.partial(_recipe, aggregator),
        trainer=ToyTrainer(),
        data=data,
        run_dir=tmp_path / "run",
        rounds=1,
        cohort=CohortSpec(count=5),
        seed=1,
    )


def test_a_cohort_that_cannot_fit_is_refused_with_the_number(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fed_module, "available_bytes", lambda: 10)  # a tiny server
    with pytest.raises(fed_module.RoundMemoryError, match=r"needs .* GB .*available"):
        _federation(tmp_path, median())
    _federation(tmp_path / "linear", weighted_mean())  # streams: never refused
