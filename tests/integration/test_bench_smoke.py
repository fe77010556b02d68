"""The benchmarks still run (their --quick smoke modes, without Flower's venv)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedlake.aggregators import AGGREGATORS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_aggregation_bench_quick_runs_every_rule(tmp_path):
    out = tmp_path / "agg.json"
    proc = subprocess.run(
        [sys.executable, "bench/aggregation.py", "--quick", "--no-flower", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for rule in AGGREGATORS:
        assert rule in text, rule
    assert json.loads(text)


def test_privacy_bench_quick_runs_every_mechanism(tmp_path):
    out, png = tmp_path / "dp.json", tmp_path / "dp.png"
    cmd = [sys.executable, "bench/privacy_utility.py", "--quick", "--output", str(out)]
    proc = subprocess.run(
        [*cmd, "--plot", str(png)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["mechanism"] for r in rows} == {"none", "central", "local", "dpsgd"}
    for r in rows:
        assert r["rounds"] == 2 and 0 <= r["accuracy"] <= 1
        assert (r["epsilon"] is None) == (r["mechanism"] == "none")
    assert png.stat().st_size > 0
    # Every run times the accountant; PLD is the tighter of the two on each setting.
    timed = json.loads(out.read_text())["accounting"]
    by = {(t["what"], t["q"], t["accountant"]): t for t in timed}
    assert {t["accountant"] for t in timed} == {"pld", "rdp"} and len(by) == len(timed)
    for t in timed:
        assert t["epsilon_seconds"] > 0 and t["calibration_seconds"] > 0
        if t["accountant"] == "pld":
            assert t["epsilon"] < by[(t["what"], t["q"], "rdp")]["epsilon"]


def test_secagg_bench_quick_runs_and_checks_its_sum(tmp_path):
    out = tmp_path / "secagg.json"
    cmd = [sys.executable, "bench/secagg.py", "--quick", "--no-flower", "--no-git"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cells = json.loads(out.read_text())["cells"]
    assert cells and all(c["fedlake"]["correct"] for c in cells)
    assert "within its error bound in 2 of 2 cells" in proc.stdout
