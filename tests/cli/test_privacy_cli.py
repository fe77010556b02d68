"""`fedlake privacy`: epsilon of a planned run, the noise for a target, one-line errors."""

import re

import pytest
import typer
from typer.testing import CliRunner

from fedlake.cli.main import app
from fedlake.privacy.calibration import plan_epsilon, plan_noise

runner = CliRunner()
N, M = 763_430, 100


def invoke(*args):
    return runner.invoke(app, ["privacy", *args], terminal_width=200)


def test_noise_mode_prints_epsilon_at_quarters_of_the_run():
    res = invoke("--clients", str(N), "--per-round", str(M), "--rounds", "1000",
                 "--delta", "1e-7", "--noise", "0.5")  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = dict(re.findall(r"│\s+(\d+) │\s+([\d.]+) │", res.output))
    assert list(rows) == ["250", "500", "750", "1000"]
    for rounds, printed in rows.items():
        spent = plan_epsilon(num_clients=N, clients_per_round=M, noise_multiplier=0.5,
                             rounds=int(rounds), delta=1e-7)  # fmt: skip
        assert float(printed) == pytest.approx(spent.epsilon, rel=1e-3)
    assert "poisson sampling, accountant pld" in res.output
    assert "note:" not in res.output  # delta is below 1 / N


def test_epsilon_mode_prints_the_noise_and_its_std_per_averaged_coordinate():
    res = invoke("--clients", str(N), "--per-round", str(M), "--rounds", "2000",
                 "--delta", "1e-6", "--epsilon", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    z = plan_noise(2.0, 1e-6, num_clients=N, clients_per_round=M, rounds=2000)
    printed = float(re.search(r"noise multiplier\s+│ ([\d.]+)", res.output).group(1))
    per_coordinate = re.search(r"per averaged coordinate\s+│ ([\d.e-]+)", res.output).group(1)
    assert printed == pytest.approx(z, rel=1e-3)
    assert float(per_coordinate) == pytest.approx(z / M, rel=1e-3)
    spent = re.search(r"epsilon at that noise\s+│ ([\d.]+)", res.output).group(1)
    assert float(spent) <= 2.0


def test_fixed_sampling_reports_the_accountant_that_was_used():
    res = invoke("--clients", "1000", "--per-round", "100", "--rounds", "8", "--noise", "2",
                 "--sampling", "fixed")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [r for r, _ in re.findall(r"│\s+(\d+) │\s+([\d.]+) │", res.output)] == [
        "2", "4", "6", "8"
    ]  # fmt: skip
    assert "fixed sampling, accountant rdp" in res.output  # PLD has no fixed-size sample


def test_delta_not_below_one_over_n_is_pointed_out():
    res = invoke("--clients", "1000", "--per-round", "10", "--rounds", "1", "--noise", "1",
                 "--delta", "0.01")  # fmt: skip
    assert res.exit_code == 0 and "note: delta 0.01 is not below 1 / clients" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --noise (to get epsilon) or --epsilon (to get the noise)"),
        (["--noise", "1", "--epsilon", "2"], "give exactly one of --noise"),
        (["--noise", "0"], "--noise must be > 0, got 0.0"),
        (["--epsilon", "-1"], "--epsilon must be > 0, got -1.0"),
        (["--noise", "1", "--delta", "1"], "--delta must be in (0, 1), got 1"),
        (["--noise", "1", "--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["--noise", "1", "--clients", "0"], "--clients must be >= 1, got 0"),
        (["--noise", "1", "--per-round", "2000"], "--per-round must be in [1, --clients=1000]"),
        (["--noise", "1", "--sampling", "uniform"], "--sampling must be poisson or fixed"),
        (["--noise", "1", "--accountant", "gdp"], "--accountant must be pld or rdp, got 'gdp'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    base = {"--clients": "1000", "--per-round": "10", "--rounds": "10"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    res = invoke(*[x for kv in base.items() for x in kv])
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0, res.output
    assert res.output.startswith("error: ") and message in res.output
    assert "Traceback" not in res.output


def test_help_explains_every_option():
    res = runner.invoke(app, ["privacy", "--help"], terminal_width=200)
    assert res.exit_code == 0
    params = typer.main.get_command(app).commands["privacy"].params
    for param in params:
        assert all(name in res.output for name in param.opts), param.opts
        assert param.help, f"{param.opts} has no help"
