"""`fedlake doctor CONFIG`: a table, markdown or JSON of findings; exit 1 on an error."""

import json
from pathlib import Path

from typer.testing import CliRunner

from fedlake.aggregators import build_aggregator
from fedlake.cli.main import app

runner = CliRunner()
EXAMPLE = Path(__file__).parents[2] / "examples/activity_fedavg.toml"
KRUM = """
[data]
scenario = "synthetic"
num_clients = 30
[model]
kind = "logreg"
[federation]
clients_per_round = 5
holdout_clients = 3
[algorithm.aggregator]
kind = "krum"
f = 2
"""


def invoke(*args):
    return runner.invoke(
        app, ["doctor", *map(str, args)], terminal_width=240, env={"COLUMNS": "240"}
    )


def test_a_config_without_errors_exits_0():
    res = invoke(EXAMPLE)  # its only finding: no held-out evaluation clients (a warning)
    assert res.exit_code == 0, res.output
    assert "eval.holdout" in res.output and res.output.strip().endswith("1 warning")


def test_a_clean_config_says_so(tmp_path):
    path = tmp_path / "clean.toml"
    path.write_text(KRUM.replace('kind = "krum"\nf = 2', 'kind = "mean"'))
    res = invoke(path)
    assert res.exit_code == 0 and "no findings" in res.output, res.output


def test_an_error_finding_prints_a_table_and_exits_1(tmp_path):
    path = tmp_path / "krum.toml"
    path.write_text(KRUM)
    res = invoke(path)
    assert res.exit_code == 1, res.output
    needed = build_aggregator({"kind": "krum", "f": 2}).min_updates
    assert "aggregator.cohort" in res.output and f"needs at least {needed} updates" in res.output
    assert res.output.strip().endswith("1 error")


def test_json_and_markdown(tmp_path):
    path = tmp_path / "krum.toml"
    path.write_text(KRUM)
    (finding,) = json.loads(invoke(path, "--format", "json").output)
    assert finding["severity"] == "error" and finding["check"] == "aggregator.cohort"
    md = invoke(path, "--format", "markdown").output
    assert md.startswith("| severity | check | finding | fix |")
    assert "| error | `aggregator.cohort` |" in md


def test_a_file_that_does_not_parse_is_one_error_not_a_traceback(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[federation\n")
    res = invoke(path, "--format", "json")
    assert res.exit_code == 1
    (finding,) = json.loads(res.output)
    assert finding["check"] == "config.load" and "not valid TOML" in finding["message"]


def test_a_missing_file_and_a_bad_format(tmp_path):
    res = invoke(tmp_path / "nope.toml")
    assert res.exit_code == 1 and "config file not found" in res.output
    res = invoke(EXAMPLE, "--format", "html")
    assert res.exit_code == 2 and "--format must be text, markdown or json" in res.output
