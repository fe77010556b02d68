"""`fedlake plan`: every printed number is the library's own, the config it suggests loads,
the file is written, and bad input is one line with exit code 2."""

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from fedlake.aggregators import krum, median, weighted_mean
from fedlake.cli.main import app
from fedlake.compression.messages import encode_delta, encode_model
from fedlake.compression.pipeline import codec_from_stages
from fedlake.config.algorithm import AlgorithmConfig
from fedlake.config.privacy import PrivacyConfig
from fedlake.config.run import CompressionConfig, FederationConfig
from fedlake.data.activity import ACTIVITIES, CHANNELS, WINDOW_LENGTH
from fedlake.guidance import CHAINS
from fedlake.guidance.markdown import size
from fedlake.models import build_trainer
from fedlake.orchestration.memory import round_memory
from fedlake.privacy.calibration import plan_epsilon, plan_noise

runner = CliRunner()
N, M, T = 20_000, 200, 40


def invoke(*args):
    return runner.invoke(app, ["plan", *args], terminal_width=200)


def rows_of(text, heading):
    """The data rows of the first Markdown table after ``heading``, as lists of cells."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def number(cell):
    return float(cell.replace(",", "").rstrip("x"))


@pytest.fixture(scope="module")
def private_plan():
    res = invoke("--scenario", "cross-device", "--clients", str(N), "--per-round", str(M),
                 "--rounds", str(T), "--model", "cnn1d", "--epsilon", "3")  # fmt: skip
    assert res.exit_code == 0, res.output
    return res.output


def test_model_size_is_the_registry_trainer_for_activity_windows(private_plan):
    trainer = build_trainer("cnn1d", input_shape=(len(CHANNELS), WINDOW_LENGTH),
                            num_classes=len(ACTIVITIES))  # fmt: skip
    assert f"- model: cnn1d ({trainer.spec.size:,} weights)" in private_plan


def test_traffic_is_what_the_codecs_write(private_plan):
    d = build_trainer("cnn1d", input_shape=(4, 128), num_classes=5).spec.size
    vec = np.random.default_rng(1).standard_normal(d, dtype=np.float32)
    rows = rows_of(private_plan, "## Traffic")
    assert [r[0] for r in rows] == [c.name for c in CHAINS]
    plain_up = len(encode_delta(vec, None, None, np.random.default_rng(0))[0])
    for row, chain in zip(rows, CHAINS, strict=True):
        rng = np.random.default_rng(2)
        up = len(encode_delta(vec, None, codec_from_stages(chain.upload), rng)[0])
        down = len(encode_model(vec, None, codec_from_stages(chain.download), rng))
        assert (number(row[1]), number(row[2])) == (up, down), chain.name
        assert number(row[3]) == pytest.approx(plain_up / up, abs=0.05)
        assert row[4] == size((up + down) * M) and row[5] == size((up + down) * M * T)
        assert number(row[6]) == pytest.approx((up + down) * 8 / 10e6, rel=1e-2)  # 10 Mbit/s


def test_noise_and_epsilon_curve_are_the_calibrators(private_plan):
    z = plan_noise(3.0, 1e-5, num_clients=N, clients_per_round=M, rounds=T)
    printed = float(re.search(r"noise multiplier z \(std / clip\): \*\*([\d.]+)\*\*",
                              private_plan).group(1))  # fmt: skip
    assert printed == pytest.approx(z, rel=1e-3)
    per_coordinate = re.search(r"per averaged coordinate \(z / m\): ([\d.e-]+)", private_plan)
    assert float(per_coordinate.group(1)) == pytest.approx(z / M, rel=1e-3)
    curve = rows_of(private_plan, "## Privacy")
    assert [int(r[0]) for r in curve] == [10, 20, 30, 40]
    for rounds, eps in curve:
        spent = plan_epsilon(num_clients=N, clients_per_round=M, noise_multiplier=z,
                             rounds=int(rounds), delta=1e-5)  # fmt: skip
        assert float(eps) == pytest.approx(spent.epsilon, rel=1e-3)
    assert float(curve[-1][1]) <= 3.0


def test_server_memory_is_round_memory(private_plan):
    d = build_trainer("cnn1d", input_shape=(4, 128), num_classes=5).spec.size
    rows = rows_of(private_plan, "## Server cluster size")
    for row, rule in zip(rows, (weighted_mean(), median(), krum(f=1)), strict=True):
        plan = round_memory(rule, M, d)
        assert row[0] == plan.detail and row[1] == size(plan.bytes)


def test_suggested_config_loads_as_fedlake_sections(private_plan):
    snippet = private_plan.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = tomllib.loads(snippet)
    algorithm = AlgorithmConfig.model_validate(cfg["algorithm"])
    federation = FederationConfig.model_validate(cfg["federation"])
    privacy = PrivacyConfig.model_validate(cfg["privacy"])
    compression = CompressionConfig.model_validate(cfg["compression"])
    assert (algorithm.name, federation.rounds, federation.clients_per_round) == ("fedavgm", T, M)
    assert (privacy.epsilon, privacy.delta, privacy.sampling) == (3.0, 1e-5, "poisson")
    assert [s.kind for s in compression.upload] == ["quantize"]


def test_out_writes_the_same_markdown_to_a_file(tmp_path):
    args = ["--scenario", "cross-silo", "--clients", "8", "--per-round", "8", "--rounds", "50",
            "--params", "100000"]  # fmt: skip
    shown = invoke(*args)
    target = tmp_path / "plan.md"
    written = invoke(*args, "--out", str(target))
    assert shown.exit_code == written.exit_code == 0, written.output
    assert written.output == f"plan written to {target}\n"
    assert target.read_text() == shown.output
    assert "- model: 100,000 weights" in shown.output
    assert "No epsilon target" in shown.output and "try `scaffold`" in shown.output


def test_slow_links_and_small_cohorts_change_the_advice_and_the_risks():
    res = invoke("--scenario", "cross-silo", "--clients", "20", "--per-round", "5", "--rounds",
                 "10", "--params", "2000000", "--epsilon", "1", "--link-mbps", "0.5")  # fmt: skip
    assert res.exit_code == 0, res.output
    z = plan_noise(1.0, 1e-5, num_clients=20, clients_per_round=5, rounds=10)
    risks = res.output.split("## Risks", 1)[1]
    assert f"std / clip per averaged coordinate is {z / 5:.3g}" in risks
    assert "5 clients per round" in risks and "slow link" in risks
    assert "compression `2-bit up, 8-bit down`" in res.output  # the slow link's choice


def test_input_shape_and_classes_reach_the_registry():
    res = invoke("--scenario", "cross-silo", "--clients", "4", "--per-round", "2", "--rounds",
                 "5", "--model", "logreg", "--input-shape", "30", "--classes", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    d = build_trainer("logreg", input_shape=(30,), num_classes=2).spec.size
    assert f"logreg ({d:,} weights)" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "edge"], "--scenario must be one of cross-silo, cross-device, got 'edge'"),
        (["--per-round", "200"], "per-round must be in [1, clients=100], got 200"),
        (["--clients", "-3"], "clients must be >= 1, got -3"),
        (["--rounds", "0"], "rounds must be >= 1, got 0"),
        (["--epsilon", "-1"], "epsilon must be > 0, got -1.0"),
        (["--delta", "1"], "delta must be in (0, 1), got 1"),
        (["--link-mbps", "0"], "link-mbps must be > 0, got 0"),
        (["--params", "0"], "params must be in [1, 50,000,000], got 0"),
        (["--model", "cnn1d"], "give exactly one of --model"),
        (["--params", None], "give exactly one of --model"),
        (["--params", None, "--model", "resnet"], "unknown model kind 'resnet'"),
        (["--params", None, "--model", "mlp", "--input-shape", "4x128"], "--input-shape must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    base = {"--scenario": "cross-device", "--clients": "100", "--per-round": "10",
            "--rounds": "10", "--params": "1000"}  # fmt: skip
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    res = invoke(*[x for k, v in base.items() if v is not None for x in (k, v)])
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0, res.output
    assert res.output.startswith("error: ") and message in res.output
    assert "Traceback" not in res.output


def test_unwritable_out_is_one_line(tmp_path):
    res = invoke("--scenario", "cross-silo", "--clients", "4", "--per-round", "2", "--rounds",
                 "5", "--params", "10", "--out", str(tmp_path / "missing" / "plan.md"))  # fmt: skip
    assert res.exit_code == 2 and res.output.startswith("error: --out ")
    assert res.output.strip().count("\n") == 0


def test_help_explains_every_option():
    res = runner.invoke(app, ["plan", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for param in typer.main.get_command(app).commands["plan"].params:
        assert all(name in res.output for name in param.opts), param.opts
        assert param.help, f"{param.opts} has no help"


def test_readme_quotes_what_its_example_prints():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Planning a federation: `fedlake plan`", 1)[1].split("\n## ", 1)[0]
    args = re.search(r"fedlake plan (.*?)\n```", section, re.S).group(1).replace("\\\n", " ")
    res = invoke(*args.split())
    assert res.exit_code == 0, res.output
    up = {r[0]: r[1] for r in rows_of(res.output, "## Traffic")}
    float32, bits8, bits2 = (up[CHAINS[i].name] for i in (0, 2, 3))  # none, 8 and 2 bits
    assert f"{float32} bytes up\nin float32, {bits8} with 8 bits, {bits2} with 2 bits" in section
    z = float(re.search(r"\*\*([\d.]+)\*\*", res.output).group(1))
    assert f"z = {z:.3g} here" in section
