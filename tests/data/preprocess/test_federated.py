"""fit_federated: only summaries leave the clients; seeded, and the same as merging by hand."""

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

import fedlake.data.preprocess.federated as federated
from fedlake.data.preprocess.federated import client_summary, fit_federated
from fedlake.data.preprocess.pipeline import PipelineOptions, fit_pipeline
from fedlake.data.preprocess.summary import ClientSummary, merge, summarise


class SpyData:
    """Three clients' raw columns; records every call made on it."""

    def __init__(self, clubs: dict[str, dict[str, np.ndarray]]) -> None:
        self.clubs = clubs
        self.calls: list[str] = []

    def client_ids(self) -> Sequence[str]:
        self.calls.append("client_ids")
        return list(self.clubs)

    def raw_columns(self, client_id: str) -> Mapping[str, np.ndarray]:
        self.calls.append(f"raw_columns:{client_id}")
        return self.clubs[client_id]

    def __getattr__(self, name: str):  # anything else the fit might reach for
        raise AssertionError(f"fit_federated used data.{name}")


def _clubs() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    out = {}
    for k, cid in enumerate(["north", "south", "east"]):
        n = 400 + 100 * k
        age = rng.normal(30 + 10 * k, 5, size=n)
        age[rng.random(n) < 0.1] = np.nan
        plan = rng.choice(["basic", "gold", "student"], size=n, p=[0.5, 0.3, 0.2]).astype(object)
        out[cid] = {"age": age, "plan": plan}
    return out


def test_equals_fitting_the_merge_of_each_clients_summary() -> None:
    clubs = _clubs()
    data = SpyData(clubs)
    options = PipelineOptions(bins=3, min_category_count=1)
    got = fit_federated(data, options)
    want = fit_pipeline(merge([summarise(c) for c in clubs.values()]), options)
    assert got == want
    rows = clubs["east"]
    assert np.array_equal(got.transform(rows), want.transform(rows))


def test_reads_only_client_ids_and_raw_columns_once_each() -> None:
    data = SpyData(_clubs())
    fit_federated(data, epsilon=0.5, seed=1)
    assert data.calls == [
        "client_ids",
        "raw_columns:north",
        "raw_columns:south",
        "raw_columns:east",
    ]


def test_dp_fit_is_deterministic_in_seed() -> None:
    clubs = _clubs()
    a = fit_federated(SpyData(clubs), epsilon=0.5, seed=7)
    b = fit_federated(SpyData(clubs), epsilon=0.5, seed=7)
    c = fit_federated(SpyData(clubs), epsilon=0.5, seed=8)
    assert a == b
    assert a.columns != c.columns
    assert a.source["epsilon"] == 0.5 and a.source["mechanism"] == "laplace"
    gauss = fit_federated(SpyData(clubs), epsilon=0.5, mechanism="gaussian", delta=1e-6)
    assert gauss.source["mechanism"] == "gaussian"


def test_each_client_draws_its_own_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[ClientSummary] = []
    real = federated.noisy_summary

    def spy(summary: ClientSummary, **kwargs) -> ClientSummary:
        sent.append(real(summary, **kwargs))
        return sent[-1]

    monkeypatch.setattr(federated, "noisy_summary", spy)
    same = {"age": np.arange(100.0), "plan": np.array(["a", "b"] * 50, dtype=object)}
    fit_federated(SpyData({"one": same, "two": same}), epsilon=1.0)
    one, two = sent
    assert one.column("plan").categories != two.column("plan").categories
    assert one.column("age").sketch != two.column("age").sketch


def test_dp_estimates_stay_close_to_the_clean_fit() -> None:
    clubs = _clubs()
    clean = fit_federated(SpyData(clubs))
    noisy = fit_federated(SpyData(clubs), epsilon=1.0, seed=3)
    assert noisy.columns[0].mean == pytest.approx(clean.columns[0].mean, rel=0.05)
    assert noisy.columns[0].scale == pytest.approx(clean.columns[0].scale, rel=0.1)
    assert noisy.columns[1].vocabulary == clean.columns[1].vocabulary


def test_client_summary() -> None:
    cols = {"x": np.array([1.0, 2.0])}
    assert client_summary(cols) == summarise(cols)
    with pytest.raises(ValueError, match="a DP summary needs a seeded rng"):
        client_summary(cols, epsilon=1.0)
    noisy = client_summary(cols, epsilon=1.0, rng=np.random.default_rng(0))
    assert noisy.epsilon == 1.0 and noisy.column("x").total is None
