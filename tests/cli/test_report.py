"""`fedlake report` works on finished runs and on runs still going or killed midway."""

from typer.testing import CliRunner

from fedlake.cli.main import app
from fedlake.config import parse_config
from fedlake.runner import run_experiment

runner = CliRunner()


def test_report_on_a_run_stopped_midway(tmp_path):
    cfg = parse_config(
        {
            "name": "midway",
            "output_dir": str(tmp_path),
            "data": {"scenario": "digits", "num_clients": 6},
            "model": {"kind": "logreg"},
            "federation": {"rounds": 5, "clients_per_round": 3},
            "lakehouse": {"mlflow": False, "delta": False},
        }
    )
    run_experiment(cfg, stop_after=2)  # as if killed after round 2
    res = runner.invoke(app, ["report", str(tmp_path / "midway"), "--out", str(tmp_path / "r.png")])
    assert res.exit_code == 0, res.output
    assert "rounds run" in res.output and "│ 2 " in res.output
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "is not a fedlake run folder" in res.output
