"""`fedlake attack-eval` end to end on real digits: the expected qualitative results,
MLflow, resume, and parallel cells equal to sequential ones."""

import os

import pytest
import yaml
from typer.testing import CliRunner

from fedlake.cli.main import app
from fedlake.config import ResumeError
from fedlake.harness import run_grid
from fedlake.harness.evaluate import RESULTS

pytestmark = pytest.mark.integration
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def raw_config(tmp_path, **grid):
    return {
        "name": "digits",
        "seed": 1,
        "output_dir": str(tmp_path / "runs"),
        "data": {"scenario": "digits", "num_clients": 10, "partition": "iid"},
        "model": {"kind": "logreg"},
        "algorithm": {"client_lr": 0.1, "local_epochs": 2, "batch_size": 16},
        "federation": {"rounds": 6, "clients_per_round": 10},
        "attack_eval": {
            "attacks": ["none", "sign_flip", "backdoor"],
            "defences": ["mean", "median", "bulyan"],
            "fractions": [0.2],
            "workers": 1,
            **grid,
        },
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    raw = raw_config(tmp)
    started = []
    outcome = run_grid(raw, on_start=lambda todo, done: started.append((todo, done)))
    return raw, outcome, started


def by(rows):
    return {(r["attack"], r["defence"]): r for r in rows}


def test_mean_collapses_under_sign_flip_and_robust_rules_hold(grid):
    _, outcome, started = grid
    assert started == [(9, 0)]
    rows = by(outcome.rows)
    clean = rows["none", "mean"]["final_accuracy"]
    assert clean > 0.85
    assert rows["sign_flip", "mean"]["final_accuracy"] < 0.3  # collapsed
    assert rows["sign_flip", "median"]["final_accuracy"] > clean - 0.1  # held
    # the backdoor works on the mean and not through the median
    assert rows["backdoor", "mean"]["backdoor_success"] > 0.8
    assert rows["backdoor", "median"]["backdoor_success"] < 0.2
    assert rows["sign_flip", "mean"]["backdoor_success"] is None  # not a backdoor
    # the baseline: the honest model puts few triggered inputs in the target class
    assert rows["none", "mean"]["backdoor_success"] < 0.2
    assert all(r["malicious_per_round"] == 2 for r in outcome.rows if r["status"] == "ok")


def test_a_defence_whose_precondition_fails_is_na(grid):
    _, outcome, _ = grid
    # bulyan with f = 2 needs 4f + 3 = 11 updates; the cohort is 10
    bulyan = [r for r in outcome.rows if r["defence"] == "bulyan"]
    assert {r["status"] for r in bulyan} == {"n/a"}
    assert "needs at least 11 updates per round" in bulyan[0]["reason"]
    assert "| none | " in outcome.markdown_path.read_text()


def test_outputs_and_mlflow(grid):
    _, outcome, _ = grid
    assert outcome.csv_path.read_text().count("\n") == 10  # header + 9 cells
    assert outcome.heatmap_path.read_bytes()[:4] == b"\x89PNG"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=outcome.tracking_uri)
    run = client.get_run(outcome.tracker_run_id)
    assert run.data.metrics["final_accuracy.none.0.2.mean"] == pytest.approx(
        by(outcome.rows)["none", "mean"]["final_accuracy"]
    )
    assert "backdoor_success.backdoor.0.2.median" in run.data.metrics
    names = {a.path for a in client.list_artifacts(outcome.tracker_run_id)}
    assert {"results.md", "results.csv", "heatmap.png"} <= names


def test_resume_runs_only_the_missing_cells(grid):
    raw, outcome, _ = grid
    log = outcome.out_dir / RESULTS
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # killed while writing
    started = []
    again = run_grid(raw, resume=True, on_start=lambda todo, done: started.append((todo, done)))
    assert started == [(4, 5)]
    # the reran cells give the same numbers: every cell is seeded
    assert [r.get("final_accuracy") for r in again.rows] == [
        r.get("final_accuracy") for r in outcome.rows
    ]


def test_resume_refuses_a_changed_base_config(grid):
    raw, _, _ = grid
    changed = {**raw, "federation": {**raw["federation"], "rounds": 7}}
    with pytest.raises(ResumeError, match="federation differ from the grid being resumed"):
        run_grid(changed, resume=True)


def test_parallel_cells_equal_sequential_ones(tmp_path, grid):
    _, outcome, _ = grid
    raw = raw_config(tmp_path, attacks=["sign_flip"], defences=["mean", "median"], workers=2)
    raw["lakehouse"] = {"mlflow": False}
    parallel = run_grid(raw)
    assert parallel.tracking_uri is None
    seq = by(outcome.rows)
    for row in parallel.rows:
        assert row["final_accuracy"] == seq[row["attack"], row["defence"]]["final_accuracy"]


def test_cli_runs_a_grid_and_prints_its_table(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, attacks=["gaussian"], defences=["mean"])))
    res = CliRunner().invoke(app, ["attack-eval", "-c", str(path), "--rounds", "2", "--no-mlflow"])
    assert res.exit_code == 0, res.output
    assert "| gaussian |" in res.output and "heatmap.png" in res.output
    again = CliRunner().invoke(
        app, ["attack-eval", "-c", str(path), "--rounds", "2", "--no-mlflow"]
    )
    assert "previous results moved to" in again.output  # nothing is deleted


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        (None, r"attack_eval: the config has no [attack_eval] section"),
        ({"defences": ["krumm"]}, "attack_eval.defences.0: unknown kind 'krumm'"),
        (
            {"defences": [{"kind": "trimmed_mean", "trim_ratio": 0.7}]},
            "trim_ratio must be in [0, 0.5), got 0.7",
        ),
        ({"attacks": [{"kind": "backdoor", "target": 12}]}, "backdoor target must be a class in"),
        ({"fractions": [0.2, 1.5]}, "fractions must be a non-empty list of numbers in (0, 1)"),
    ],
)
def test_cli_config_errors_are_one_line_exit_2(tmp_path, grid, expected):
    path = tmp_path / "bad.yaml"
    raw = {
        "data": {"scenario": "digits", "num_clients": 10},
        "model": {"kind": "logreg"},
        "federation": {"clients_per_round": 10},
    }
    if grid is not None:
        raw["attack_eval"] = grid
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["attack-eval", "-c", str(path), "--no-mlflow"])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert out.startswith("error: config:") and expected in out
