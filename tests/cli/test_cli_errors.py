"""Bad configs are one clear line and exit code 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedlake.cli.main import app
from fedlake.config import ConfigError, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[federation]\nroundz = 3\n",
            "federation.roundz: unknown key (accepted: clients_per_round",
        ),
        ("[federation]\nclients_per_round = 500\n", "exceeds data.num_clients (100)"),
        (
            "[executor]\nkind = 'gpu'\n",
            "executor.kind: Input should be 'inline' or 'process', got 'gpu'",
        ),
        (
            "[data]\nscenario = 'synthetic'\nalpha = -1\n",
            "data.alpha: Input should be greater than",
        ),
        ("[federation]\nrounds = 'ten'\n", "federation.rounds: Input should be a valid integer"),
        ("[federation]\nmin_clients = 50\nclients_per_round = 10\n", "min_clients (50) exceeds"),
        ("[data\n", "not valid TOML"),
    ],
)
def test_config_errors_are_one_line_exit_2(tmp_path, text, expected):
    res = runner.invoke(app, ["run", "--config", str(write(tmp_path, text)), "-q"])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert expected in out
    assert "Traceback" not in res.output


def test_missing_config_file(tmp_path):
    res = runner.invoke(app, ["run", "--config", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "config file not found" in res.output


def test_yaml_configs_are_accepted(tmp_path):
    p = write(tmp_path, "federation:\n  rounds: 3\n  clients_per_round: 4\n", "c.yaml")
    cfg = load_config(p)
    assert cfg.federation.rounds == 3 and cfg.data.scenario == "activity"
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(write(tmp_path, "federation:\n  bogus: 1\n", "d.yaml"))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    load_config(path)


def test_help_explains_every_option():
    res = runner.invoke(app, ["run", "--help"])
    assert res.exit_code == 0
    for opt in ("--config", "--resume", "--rounds", "--executor", "--workers", "--no-mlflow"):
        assert opt in res.output


def test_real_process_prints_no_traceback(tmp_path):
    p = write(tmp_path, "[executor]\nworkers = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fedlake.cli.main", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "executor.workers" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1
