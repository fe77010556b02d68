"""`fedlake report` works on finished runs and on runs still going or killed midway."""

from typer.testing import CliRunner

from fedlake.cli.main import app
from fedlake.config import parse_config
from fedlake.run.experiment import run_experiment

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


def test_run_and_report_show_the_pooled_baseline(tmp_path):
    raw = {
        "name": "pooled",
        "output_dir": str(tmp_path),
        "data": {"scenario": "digits", "num_clients": 4},
        "model": {"kind": "logreg"},
        "federation": {"rounds": 3, "clients_per_round": 4, "pooled_baseline": True},
        "lakehouse": {"mlflow": False, "delta": False},
    }
    cfg = tmp_path / "pooled.toml"
    cfg.write_text(
        "\n".join(
            [f'name = "{raw["name"]}"', f'output_dir = "{tmp_path}"']
            + [
                f"[{section}]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in values.items())
                for section, values in raw.items()
                if isinstance(values, dict)
            ]
        )
    )
    res = runner.invoke(app, ["run", "--config", str(cfg), "--quiet"], terminal_width=200)
    assert res.exit_code == 0, res.output
    run = tmp_path / "pooled"
    from fedlake.run.baseline import read_baseline

    b = read_baseline(run)
    assert b is not None and b.epochs == 3 and b.train_rows > 0
    line = f"accuracy {b.pooled_accuracy:.4f}, loss {b.pooled_loss:.4f}"
    assert "pooled training" in res.output and line in res.output
    assert f"({b.gap_points:+.1f} points" in res.output
    again = runner.invoke(app, ["report", str(run)], terminal_width=200)
    assert again.exit_code == 0 and line in again.output


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)
