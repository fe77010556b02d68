"""Data that already lives in a Delta table trains in place, one client at a time."""

import pytest

from fedlake.config import parse_config
from fedlake.data.activity import ActivityPopulation
from fedlake.data.sources import write_client_table
from fedlake.run.experiment import run_experiment

pytestmark = pytest.mark.integration


def test_federation_over_a_delta_table(tmp_path):
    table = tmp_path / "wearables"
    write_client_table(ActivityPopulation(8, seed=1, features=True), table, format="delta")
    cfg = parse_config(
        {
            "name": "table-run",
            "output_dir": str(tmp_path / "runs"),
            "data": {"scenario": "table", "path": str(table), "num_classes": 5},
            "model": {"kind": "logreg"},
            "algorithm": {"client_lr": 0.1, "local_epochs": 2},
            "federation": {"rounds": 5, "clients_per_round": 4},
            "lakehouse": {"mlflow": False},
        }
    )
    out = run_experiment(cfg)
    hist = out.result.history
    assert [h["round"] for h in hist] == [1, 2, 3, 4, 5]
    assert all(h["num_completed"] == 4 for h in hist)
    assert hist[-1]["eval_accuracy"] > 0.5  # 5 activities: chance is ~0.2
    assert out.lakehouse_root is not None and (out.lakehouse_root / "fedlake").exists()
