"""Held-out evaluation clients: drawn with the seed, never sampled, the only ones the
global model is evaluated on; refusals with their reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedlake.config import ConfigError, parse_config
from fedlake.orchestration.events import NullObserver
from fedlake.run import run_experiment
from fedlake.run.build import build_experiment
from fedlake.simulation.evaluation import split_holdout

BASE: dict[str, Any] = {
    "name": "holdout",
    "seed": 3,
    "data": {"scenario": "synthetic", "num_clients": 12},
    "model": {"kind": "logreg"},
    "algorithm": {"name": "fedavg", "local_epochs": 1},
    "federation": {"rounds": 3, "clients_per_round": 4, "holdout_clients": 3},
    "lakehouse": {"delta": False, "mlflow": False},
}


def _config(tmp_path: Path, **federation: Any) -> Any:
    raw = json.loads(json.dumps(BASE))
    raw["federation"].update(federation)
    raw["output_dir"] = str(tmp_path)
    return parse_config(raw)


def test_the_split_is_seeded_disjoint_and_complete() -> None:
    ids = [f"c{i}" for i in range(10)]
    train, held = split_holdout(ids, 3, seed=1)
    assert len(held) == 3 and set(train) | set(held) == set(ids) and not set(train) & set(held)
    assert split_holdout(ids, 3, seed=1) == (train, held)
    assert split_holdout(ids, 3, seed=2)[1] != held or split_holdout(ids, 3, seed=5)[1] != held
    assert split_holdout(ids, 0, seed=1) == (ids, [])
    with pytest.raises(ValueError, match=r"holdout_clients must be in \[0, 9\]"):
        split_holdout(ids, 10, seed=1)


def test_held_out_clients_never_train_and_are_the_evaluation(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    exp = build_experiment(cfg, observer=NullObserver(), run_dir=tmp_path / "run")
    data = exp.scenario.data
    _, held = split_holdout(data.client_ids(), 3, seed=3)
    assert set(exp.federation.client_ids) == set(data.client_ids()) - set(held)
    history = run_experiment(cfg).result.history
    for row in history:
        assert not set(json.loads(row["cohort"])) & set(held)
    test_rows = sum(len(data.load(c).y_test) for c in held)
    assert json.loads(history[-1]["metrics"])["eval_examples"] == test_rows


@pytest.mark.parametrize(
    ("federation", "words"),
    [
        ({"holdout_clients": 12}, "must leave clients to train"),
        ({"pooled_baseline": True}, "use one of them"),
    ],
)
def test_refusals(tmp_path: Path, federation: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg = _config(tmp_path, **federation)
        build_experiment(cfg, observer=NullObserver(), run_dir=tmp_path / "run")
    assert words in str(err.value)
